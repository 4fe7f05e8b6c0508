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


class HeadTooLarge(ProtocolError):
    """The response head has more bytes or header lines than the pool allows."""


class BodyTooLarge(ProtocolError):
    """A body read whole (:meth:`Http1Response.read`) is over the pool's limit."""


class _UnexpectedMessage(Exception):
    """Raised inside the parser when bytes follow a complete response."""


class _OverLimit(Exception):
    """Raised inside the parser to stop it when the response passes a limit."""

    def __init__(self, error: ProtocolError) -> None:
        super().__init__(str(error))
        self.error = error
