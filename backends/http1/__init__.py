"""A small, fast HTTP/1.1 client for upstream calls: one keep-alive pool per origin.

Built on a raw :class:`asyncio.Protocol` and ``httptools``' response parser, it
does only what the gateway needs: ``POST``/``GET`` with a bytes body, the
response head, then the body whole (:meth:`Http1Response.read`) or as it
arrives (:meth:`Http1Response.chunks`), with ``Content-Length``, chunked or
read-until-close framing. Per request it allocates the request bytes, one
future per wait and the response object; timeouts use one lazily re-armed
timer per connection rather than one timer per request.

Connections: idle ones are reused last-in first-out, at most
``max_connections`` are open (further requests wait in line), and a
connection is reused only after its whole response arrived with keep-alive;
anything else (``Connection: close``, EOF, a parse error, a timeout, a body
not fully received at :meth:`Http1Response.release`) closes it. A request
that finds its reused connection dead before any response byte arrived (the
server closed it as it sat idle) is sent once more on a fresh connection.

Errors, all raised from this module's own classes (the caller translates them)::

    Http1Error
    ├── ConnectError         refused, unreachable or connect timeout: nothing was sent
    ├── PoolClosed           the pool was closed
    ├── PoolTimeout          no free connection before the total deadline (a TimeoutError)
    ├── ReadTimeout          no head / no body bytes in time, or total deadline (a TimeoutError)
    ├── RemoteDisconnected   the server closed the connection before or while responding
    └── ProtocolError        the response is not valid HTTP/1.1
        ├── HeadTooLarge     its head is over ``max_head_bytes`` or ``max_headers``
        └── BodyTooLarge     a body read whole is over ``max_body_bytes``

Limits on what the server may send, per pool: the head's size
(``max_head_bytes``, status line and interim 1xx heads included) and its
number of header lines (``max_headers``), and the size of a body read whole
(``max_body_bytes``; a body declared larger by ``Content-Length`` fails before
any of it is read). A body read as it arrives is bounded by flow control
instead (``buffer_limit``). Passing a limit closes the connection.
"""

from backends.http1.errors import (
    BodyTooLarge,
    ConnectError,
    HeadTooLarge,
    Http1Error,
    PoolClosed,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    RemoteDisconnected,
)
from backends.http1.pool import Http1Pool
from backends.http1.response import Http1Response

__all__ = [
    "BodyTooLarge",
    "ConnectError",
    "HeadTooLarge",
    "Http1Error",
    "Http1Pool",
    "Http1Response",
    "PoolClosed",
    "PoolTimeout",
    "ProtocolError",
    "ReadTimeout",
    "RemoteDisconnected",
]
