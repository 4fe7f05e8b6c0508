"""The keep-alive connection pool of one origin, and its request method."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence
from typing import cast
from urllib.parse import urlsplit

from backends.http1.connection import _DONE, _HEAD, _REQUEST_LINES, _Connection
from backends.http1.errors import (
    ConnectError,
    PoolClosed,
    PoolTimeout,
    RemoteDisconnected,
)
from backends.http1.response import Http1Response


class Http1Pool:
    """Keep-alive HTTP/1.1 connections to one origin (``http://host:port[/prefix]``)."""

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 64,
        connect_timeout_s: float = 5.0,
        idle_timeout_s: float = 60.0,
        buffer_limit: int = 256 * 1024,
        max_head_bytes: int = 64 * 1024,
        max_headers: int = 100,
        max_body_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http://host[:port] origins are supported, not {base_url!r}")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if min(max_head_bytes, max_headers, max_body_bytes) < 1:
            raise ValueError("response limits must be at least 1")
        self.origin = f"http://{parts.netloc}"
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self._fixed = b"host: %b\r\nconnection: keep-alive\r\n" % parts.netloc.encode("idna")
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        #: Unconsumed body bytes above which a streaming response stops reading the socket.
        self.buffer_limit = buffer_limit
        #: Most bytes of one response head (status line, headers, interim 1xx heads).
        self.max_head_bytes = max_head_bytes
        #: Most header lines in one response (interim 1xx heads included).
        self.max_headers = max_headers
        #: Most bytes of a body read whole (:meth:`Http1Response.read`).
        self.max_body_bytes = max_body_bytes
        self._lines: dict[tuple[str, str], bytes] = {}
        self._idle: list[_Connection] = []  # oldest first; reused from the end
        self._conns: set[_Connection] = set()
        self._open = 0  # connections open or opening (slots taken)
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Connections open or being opened."""
        return self._open

    @property
    def idle_connections(self) -> int:
        """Open connections waiting for a request."""
        return len(self._idle)

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        *,
        first_byte_timeout_s: float,
        total_timeout_s: float | None = None,
    ) -> Http1Response:
        """Send one request; return once the response head is in.

        ``headers`` must not include Host, Content-Length or Connection (added
        here). ``first_byte_timeout_s`` bounds the wait for the head and every
        later wait for body bytes; ``total_timeout_s`` bounds the whole
        exchange, waiting for a free connection included.
        """
        data = self._encode(method, path, headers, len(body))
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        total = math.inf if total_timeout_s is None else now + total_timeout_s
        conn = self._take_idle(now) if self._idle else None
        if conn is None:
            conn = await self._acquire(total, fresh=False)
        head_only = method == "HEAD"
        retried = False
        while True:
            reused = conn.requests > 0
            try:
                if conn.closed:
                    raise RemoteDisconnected(f"{self.origin} closed the connection")
                conn.send(data, body, first_byte_timeout_s, total, head_only)
                while conn.state == _HEAD:
                    if conn.exc is not None:
                        raise conn.exc
                    await conn.wait()
            except RemoteDisconnected:
                if not reused or conn.received or retried:
                    raise
                retried = True  # a stale keep-alive connection: nothing was read, send again
                conn = await self._acquire(total, fresh=True)
                continue
            except BaseException:
                conn._close(None)
                raise
            return Http1Response(conn)

    async def close(self) -> None:
        """Close every connection; requests in flight fail with :class:`PoolClosed`."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed(f"pool for {self.origin} is closed"))
        for conn in list(self._conns):
            conn._close(PoolClosed(f"pool for {self.origin} is closed"))
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await asyncio.sleep(0)  # let the transports finish closing

    # -- internals ----------------------------------------------------------------------

    def _encode(
        self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]], length: int
    ) -> bytes:
        line = self._lines.get((method, path))
        if line is None:
            if not method.isalpha() or not path.isprintable() or " " in path:
                raise ValueError(f"invalid method or path: {method!r} {path!r}")
            target = (self._prefix + path).encode("ascii")
            line = b"%b %b HTTP/1.1\r\n%b" % (method.encode("ascii"), target, self._fixed)
            if len(self._lines) >= _REQUEST_LINES:
                self._lines.clear()
            self._lines[(method, path)] = line
        if not headers:
            return line + b"content-length: %d\r\n\r\n" % length
        block = b"".join([b"%b: %b\r\n" % item for item in headers])
        count = len(headers)
        if block.count(b"\n") != count or block.count(b"\r") != count:
            raise ValueError("header names and values must not contain CR or LF")
        return line + block + b"content-length: %d\r\n\r\n" % length

    def _take_idle(self, now: float) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            conn.in_pool = False
            if now - conn.idle_since < self.idle_timeout_s:
                return conn
            conn._close(None)
        return None

    async def _acquire(self, total: float, *, fresh: bool) -> _Connection:
        """A connection to send on: an idle one, a new one, or the next one released."""
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        while True:
            if self._closed:
                raise PoolClosed(f"pool for {self.origin} is closed")
            if self._idle:
                if fresh:
                    return await self._replace(self._idle.pop())
                conn = self._take_idle(loop.time())
                if conn is not None:
                    return conn
            if self._open < self.max_connections:
                self._open += 1
                return await self._connect()
            got = await self._wait_for_free(loop, total)
            if got is None:  # a slot, not a connection: open one
                return await self._connect()
            if not got.closed:  # else it died on its way here; its slot went on: try again
                return await self._replace(got) if fresh else got

    async def _wait_for_free(
        self, loop: asyncio.AbstractEventLoop, total: float
    ) -> _Connection | None:
        """Queue for the next released connection (or freed slot: ``None``)."""
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(None if total == math.inf else total):
                try:
                    return await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():
                        given = waiter.result()  # handed over just as we were cancelled
                        if given is None:
                            self._release_slot()
                        elif not given.closed:
                            self._put_idle(given)
                    else:
                        waiter.cancel()
                        self._waiters.remove(waiter)
                    raise
        except TimeoutError as exc:
            raise PoolTimeout(f"no free connection to {self.origin} in time") from exc

    async def _replace(self, conn: _Connection) -> _Connection:
        """Close ``conn`` and open a new connection in its slot."""
        conn.in_pool = False
        conn.keep_slot = True
        conn._close(None)
        return await self._connect()

    async def _connect(self) -> _Connection:
        """Open a connection in a slot already counted in ``_open``."""
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        conn = _Connection(self, loop)
        self._conns.add(conn)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await loop.create_connection(lambda: conn, self._host, self._port)
        except TimeoutError as exc:
            conn._close(None)
            raise ConnectError(f"connecting to {self.origin} timed out") from exc
        except OSError as exc:
            conn._close(None)
            raise ConnectError(f"cannot connect to {self.origin}: {exc}") from exc
        except BaseException:
            conn._close(None)
            raise
        if self._closed:
            conn._close(None)
            raise PoolClosed(f"pool for {self.origin} is closed")
        return conn

    def _finish(self, conn: _Connection) -> None:
        """A response is done with ``conn``: keep it for the next request or close it."""
        if conn.closed:
            return
        if conn.state != _DONE or not conn.keep_alive or self._closed:
            conn._close(None)
            return
        conn.recycle()
        self._put_idle(conn)

    def _put_idle(self, conn: _Connection) -> None:
        """Hand a ready connection to the first waiter, else keep it idle."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        loop = conn.loop
        conn.idle_since = loop.time()
        conn.in_pool = True
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_at(conn.idle_since + self.idle_timeout_s, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle longer than the idle timeout (the oldest come first)."""
        self._sweeper = None
        idle = self._idle
        if not idle:
            return
        loop = idle[0].loop
        cutoff = loop.time() - self.idle_timeout_s
        expired = 0
        while expired < len(idle) and idle[expired].idle_since <= cutoff:
            expired += 1
        for conn in idle[:expired]:
            conn.in_pool = False
            conn._close(None)
        del idle[:expired]
        if idle:
            self._sweeper = loop.call_at(idle[0].idle_since + self.idle_timeout_s, self._sweep)

    def _forget(self, conn: _Connection) -> None:
        """``conn`` closed: drop it and free its slot (unless a replacement takes it)."""
        if conn.in_pool:
            conn.in_pool = False
            self._idle.remove(conn)
        self._conns.discard(conn)
        if conn.keep_slot:
            conn.keep_slot = False
        else:
            self._release_slot()

    def _release_slot(self) -> None:
        self._open -= 1
        waiters = self._waiters
        while waiters and self._open < self.max_connections:
            waiter = waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
