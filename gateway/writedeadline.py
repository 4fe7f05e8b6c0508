"""The client write deadline: a connection whose client stops reading is reset.

A client that sends a request and never reads the answer fills its receive window,
then the kernel's send buffer, then the transport's; the transport pauses writing
and the request's task waits in ``drain`` for ever, holding what the request took
(a worker slot, a KV reservation, an upstream connection). :class:`WriteDeadline`
runs while writing is paused: if the client has not read enough to resume it
within ``timeout_s``, the connection is reset. ``connection_lost`` follows, and the
request sees a client that left (``gateway.sending``: a stream is cancelled and its
relay releases and meters it, as ``client_cancelled``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable

log = logging.getLogger("tollway.http")

#: ``SO_LINGER`` on with a zero timeout: closing the socket resets the connection.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class WriteDeadline:
    """One connection's write deadline: :meth:`start` when writing pauses,
    :meth:`stop` when it resumes or the connection is lost."""

    __slots__ = ("loop", "transport", "timeout_s", "peer", "_timer")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        timeout_s: float,
        peer: Callable[[], str],
    ) -> None:
        self.loop = loop
        self.transport = transport
        self.timeout_s = timeout_s
        self.peer = peer
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Writing paused (the buffer is over the high-water mark): the clock runs."""
        if self._timer is None:
            self._timer = self.loop.call_later(self.timeout_s, self._reached)

    def stop(self) -> None:
        """Writing resumed (the client read), or the connection is gone."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _reached(self) -> None:
        self._timer = None
        transport = self.transport
        if transport.is_closing() and transport.get_write_buffer_size() == 0:
            return
        log.warning(
            "client %s read nothing of its response for %g s: connection reset",
            self.peer(),
            self.timeout_s,
        )
        # Reset, not close: a FIN would wait in the kernel behind the unread bytes,
        # which is what never drains.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        transport.abort()
