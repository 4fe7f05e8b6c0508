"""A response whose head has arrived: its body read whole or as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import cast

from backends.http1.connection import _DONE, _Connection
from backends.http1.errors import Http1Error


class Http1Response:
    """A response whose head has arrived; read its body once, then it is released.

    The connection goes back to the pool when the body has been read whole
    (:meth:`read`, or :meth:`chunks` to the end) or at :meth:`release`: it is
    reused only when the whole response arrived, and closed otherwise. Always
    release a response you do not read to the end (or use ``async with``).
    """

    __slots__ = ("status", "headers", "_conn", "_body")

    def __init__(self, conn: _Connection) -> None:
        self.status: int = conn.status
        #: Header (name, value) pairs as received, in order.
        self.headers: list[tuple[bytes, bytes]] = conn.headers
        self._conn: _Connection | None = conn
        self._body: bytes | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (case-insensitive), else ``None``."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def header_map(self) -> dict[str, str]:
        """Headers as ``{lowercase name: value}`` strings (the last one wins)."""
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.headers}

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet consumed (flow control keeps this bounded)."""
        return self._conn.buffered if self._conn is not None else 0

    async def read(self) -> bytes:
        """The whole body (waiting at most the read timeout between arrivals).

        A body over the pool's ``max_body_bytes`` (declared by its
        ``Content-Length``, or as it arrives) raises
        :class:`~backends.http1.BodyTooLarge` and closes the connection.
        """
        conn = self._conn
        if conn is None:
            if self._body is None:
                raise Http1Error("the response was released before its body was read")
            return self._body
        conn.read_all = True
        conn.wake_on_body = False
        limit = conn.pool.max_body_bytes
        if conn.buffered > limit or (conn.declared_length() or 0) > limit:
            error = conn.body_too_large()  # fail before reading what is too much
            conn._close(error)
            self.release()
            raise error
        if conn.paused:
            conn.paused = False
            cast(asyncio.Transport, conn.transport).resume_reading()
        try:
            while conn.state != _DONE:
                if conn.exc is not None:
                    raise conn.exc
                await conn.wait()
        except BaseException:
            self.release()
            raise
        body = self._body = conn.take() if conn.body else b""
        self.release()
        return body

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """Body bytes as they arrive (everything buffered at each step, de-chunked)."""
        conn = self._conn
        if conn is None:
            raise Http1Error("the response was released before its body was read")
        conn.wake_on_body = True
        try:
            while True:
                if self._conn is not conn:
                    raise Http1Error("the response was released while its body was read")
                if conn.body:
                    yield conn.take()
                elif conn.state == _DONE:
                    return
                elif conn.exc is not None:
                    raise conn.exc
                else:
                    await conn.wait()
        finally:
            self.release()

    def release(self) -> None:
        """Give the connection back (reused if the whole response arrived, else closed)."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.pool._finish(conn)

    async def __aenter__(self) -> Http1Response:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
