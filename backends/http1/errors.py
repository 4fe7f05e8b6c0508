"""The HTTP/1.1 client's errors (translated by the caller, never leaked)."""

from __future__ import annotations


class Http1Error(Exception):
    """Base of this module's errors."""


class ConnectError(Http1Error):
    """The connection could not be opened; the request was not sent."""


class PoolClosed(Http1Error):
    """The pool was closed before or during the request."""


class PoolTimeout(Http1Error, TimeoutError):
    """Every connection stayed busy until the request's total deadline."""


class ReadTimeout(Http1Error, TimeoutError):
    """The response head or the next body bytes did not arrive in time."""


class RemoteDisconnected(Http1Error):
    """The server closed the connection before the response was complete."""


class ProtocolError(Http1Error):
    """The server's bytes are not a valid HTTP/1.1 response."""


class _UnexpectedMessage(Exception):
    """Raised inside the parser when bytes follow a complete response."""
