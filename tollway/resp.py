"""The one Redis client of the product: lean, pipelined, multiplexed.

redis-py spends most of a hot-path call in Python: a connection checked out of a
pool and back, command packing, reply parsing, and its own locks. This client
keeps one connection per process and multiplexes every caller over it:

- commands are packed by hiredis (C); the commands issued in one event loop
  iteration leave together at its end, in one ``write`` (so concurrent requests
  share syscalls and Redis reads them as one pipeline). An *urgent* command (one a
  request waits for, such as its admission) leaves at once, with whatever is
  queued, while fewer than ``IMMEDIATE_BELOW`` replies are outstanding: at low
  concurrency there is little to share a write with, and Redis gets it before, say,
  the upstream request its caller sends next;
- replies are parsed by hiredis and matched to callers in order (Redis answers a
  connection's commands in the order it received them);
- a command may be *deferred* (``defer_s``): it waits to leave with the next
  command anyone sends, or at most ``defer_s``; work the caller does not wait for
  (settling a request's limits after its response) then costs no write and no
  wake-up of its own;
- one timer per connection, not one per call, enforces the timeout: when the oldest
  outstanding command is older than ``timeout_s`` the connection is closed and every
  caller on it gets :class:`RespTimeout`; the next call reconnects.

It serves every role of the gateway (limits, the usage stream and its writer, the
leader lock, idempotency, summaries). A blocking read (``XREADGROUP BLOCK``) would
stall every caller behind it on the shared connection: send those through a
:meth:`RespClient.dedicated` client, with ``wait_s`` telling the timer how long the
server may hold the reply. Lua scripts run by their SHA1
(:class:`tollway.resp_script.Script`). Errors are
:class:`RespError` (an error reply, e.g. ``NOSCRIPT``), :class:`RespTimeout` and
:class:`RespConnectionError`; the last two are :class:`OSError` subclasses, so
callers that translate ``OSError`` into an outage see them as one.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis

Arg = str | bytes | int | float

#: Outstanding replies below which a command is written at once rather than at the end
#: of the event loop iteration.
IMMEDIATE_BELOW = 4

# hiredis's stubs type the argument as a 1-tuple; it takes any tuple of arguments.
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)


class RespError(Exception):
    """An error reply from Redis (its text, e.g. ``NOSCRIPT No matching script``)."""

    @property
    def kind(self) -> str:
        """The reply's first word: ``NOSCRIPT``, ``WRONGTYPE``, ``ERR`` …"""
        text = str(self.args[0]) if self.args else ""
        return text.split(" ", 1)[0]


class RespConnectionError(OSError):
    """The connection could not be made, or broke with commands outstanding."""


class RespTimeout(RespConnectionError, TimeoutError):
    """A command got no reply within the client's timeout."""


class _Connection(asyncio.Protocol):
    """One connection: a queue of waiting callers, answered in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(replyError=RespError)
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._outgoing: list[bytes] = []
        self._queued = 0  # replies expected for the commands in _outgoing (not yet written)
        self._flush_scheduled = False
        self._defer_timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; only write/abort are used
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RespConnectionError(f"invalid reply from Redis: {exc}"))
                return
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self._fail(RespConnectionError("unexpected reply from Redis"))
                return
            future, _ = waiting.popleft()
            if future.done():  # the caller was cancelled; its reply is dropped
                continue
            if isinstance(reply, RespError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RespConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    # -- sending ---------------------------------------------------------------------

    def send(
        self,
        packed: bytes,
        replies: int = 1,
        defer_s: float = 0.0,
        urgent: bool = False,
        wait_s: float = 0.0,
    ) -> list[asyncio.Future[Any]]:
        """Queue one packed command (or ``replies`` pipelined ones); their futures.

        With ``defer_s`` the bytes leave with the next undeferred command, or after
        ``defer_s`` at the latest; ``urgent`` ones leave at once at low concurrency;
        ``wait_s`` is how long the server may hold the reply (a blocking read) before
        the timeout starts."""
        if self.closed:
            raise RespConnectionError("connection to Redis is closed")
        sent_by = time.monotonic() + defer_s + wait_s
        futures = [self._loop.create_future() for _ in range(replies)]
        for future in futures:
            self._waiting.append((future, sent_by))
        self._outgoing.append(packed)
        self._queued += replies
        if defer_s > 0:
            if not self._flush_scheduled and self._defer_timer is None:
                self._defer_timer = self._loop.call_later(defer_s, self._flush)
        elif urgent and len(self._waiting) - self._queued < IMMEDIATE_BELOW:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout_s, self._check_timeout)
        return futures

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._defer_timer is not None:
            self._defer_timer.cancel()
            self._defer_timer = None
        if self.closed or self._transport is None or not self._outgoing:
            return
        data = self._outgoing[0] if len(self._outgoing) == 1 else b"".join(self._outgoing)
        self._outgoing = []
        self._queued = 0
        self._transport.write(data)

    def _check_timeout(self) -> None:
        self._timer = None
        if self.closed or not self._waiting:
            return
        age = time.monotonic() - self._waiting[0][1]  # negative while still deferred
        if age >= self._timeout_s:
            self._fail(RespTimeout(f"Redis did not answer within {self._timeout_s:g} s"))
            return
        self._timer = self._loop.call_later(self._timeout_s - age, self._check_timeout)

    def _fail(self, error: RespConnectionError) -> None:
        """Close the connection and fail every caller still waiting on it."""
        self.closed = True
        for timer in (self._timer, self._defer_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._defer_timer = None
        waiting, self._waiting = self._waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        """Close now; callers still waiting get :class:`RespConnectionError`."""
        self._fail(RespConnectionError("the Redis client was closed"))


class RespClient:
    """A multiplexed Redis client (RESP2): every caller of a process shares one connection
    (blocking reads go through a :meth:`dedicated` one)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 0.25,
        client_name: str | None = None,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.client_name = client_name
        self._username, self._password = username, password
        self._ssl = ssl_context
        self.timeout_s = timeout_s
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, *, timeout_s: float = 0.25, client_name: str | None = None
    ) -> RespClient:
        """A client for ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://``
        (query parameters are ignored); ``client_name`` names its connections
        (``CLIENT SETNAME``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        path = parts.path.strip("/")
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 6379,
            db=int(path) if path else 0,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ssl_context=ssl.create_default_context() if parts.scheme == "rediss" else None,
            timeout_s=timeout_s,
            client_name=client_name,
        )

    def dedicated(self) -> RespClient:
        """A new client for the same server, credentials, name and timeout, with a connection
        of its own (made on first use): for blocking reads, which would stall the
        callers sharing this client's connection. The caller closes it."""
        twin = RespClient(
            self.host,
            self.port,
            db=self.db,
            username=self._username,
            password=self._password,
            ssl_context=self._ssl,
            timeout_s=self.timeout_s,
            client_name=self.client_name,
        )
        return twin

    async def execute(
        self, *args: Arg, defer_s: float = 0.0, urgent: bool = False, wait_s: float = 0.0
    ) -> Any:
        """Send one command and return its reply (raises :class:`RespError` on an error reply).

        ``defer_s`` > 0: let the command wait up to that long to share a write with the
        next command sent; ``urgent``: the caller waits for it on a request's critical
        path, so at low concurrency it is written at once (see the module docstring);
        ``wait_s``: the server may hold the reply that long (``BLOCK``) before the
        client's timeout starts (use a :meth:`dedicated` client for such commands)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        (future,) = conn.send(_pack(args), defer_s=defer_s, urgent=urgent, wait_s=wait_s)
        return await future

    async def pipeline(self, commands: list[tuple[Arg, ...]]) -> list[Any]:
        """Send several commands in one write; their replies in order (error replies
        are returned as :class:`RespError` values, not raised)."""
        if not commands:
            return []
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        packed = b"".join(_pack(c) for c in commands)
        futures = conn.send(packed, replies=len(commands))
        # The replies come in order, usually in one read: awaiting each future in turn
        # costs less than gather()'s aggregate future and per-future callbacks.
        results: list[Any] = []
        for i, future in enumerate(futures):
            try:
                results.append(await future)
            except RespError as reply:
                results.append(reply)
            except BaseException:
                for rest in futures[i + 1 :]:  # failed or cancelled with it: retrieve them
                    if rest.done() and not rest.cancelled():
                        rest.exception()
                    else:
                        rest.cancel()
                raise
        return results

    async def _connection(self) -> _Connection:
        if self._closed:
            raise RespConnectionError("the Redis client was closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        task = self._connecting
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self.timeout_s),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                )
                for command in self._hello():
                    (future,) = conn.send(_pack(command))
                    await future
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, RespConnectionError):
                raise
            where = f"{self.host}:{self.port}"
            if isinstance(exc, TimeoutError):
                raise RespTimeout(f"connecting to Redis at {where} timed out") from exc
            if isinstance(exc, OSError):
                raise RespConnectionError(f"cannot connect to Redis at {where}") from exc
            if isinstance(exc, RespError):
                raise RespConnectionError(f"Redis refused the connection set-up: {exc}") from exc
            raise
        if self._closed:
            conn.close()
            raise RespConnectionError("the Redis client was closed")
        self._conn = conn
        return conn

    def _hello(self) -> list[tuple[Arg, ...]]:
        """The commands that set a new connection up: AUTH, SELECT, CLIENT SETNAME."""
        hello: list[tuple[Arg, ...]] = []
        if self._password is not None:
            auth: tuple[Arg, ...] = (self._password,)
            if self._username is not None:
                auth = (self._username, self._password)
            hello.append(("AUTH", *auth))
        if self.db:
            hello.append(("SELECT", self.db))
        if self.client_name is not None:
            hello.append(("CLIENT", "SETNAME", self.client_name))
        return hello

    async def aclose(self) -> None:
        """Close the connection; later calls fail."""
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        await asyncio.sleep(0)  # let the transport's close callbacks run
