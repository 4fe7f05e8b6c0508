"""Shared pieces of the fault-injection suite: load from the openai SDK, ledger checks, results.

Every fault test drives a bounded load (a fixed number of requests from a few
concurrent clients, each with a client-side timeout), records what the clients
saw, and compares the request ids of every response a client saw complete with
the usage ledger after recovery: none may be missing, none doubled. With
``TOLLWAY_FAULTS_REPORT=FILE`` each test appends one JSON line of results to
``FILE`` (docs/reliability.md's table is made from it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import openai
from sqlalchemy import func, select

from billing.tables import usage_ledger
from tests.e2e.processes import API_KEY, free_port
from tollway.database import create_engine, sqlite_url

BODY: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "user", "content": "Say something."}],
    "max_tokens": 8,
}


@dataclass
class LoadResult:
    """What the clients of one load run saw."""

    sent: int = 0
    completed: list[str] = field(default_factory=list)  # request ids of finished responses
    errors: dict[str, int] = field(default_factory=dict)  # error kind -> count
    latencies_s: list[float] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def _kind(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        code = exc.body.get("code") if isinstance(exc.body, dict) else None
        return f"{exc.status_code} {code}" if code else str(exc.status_code)
    return type(exc).__name__


async def run_load(
    base_url: str,
    *,
    requests: int,
    clients: int = 4,
    stream_every: int = 2,
    timeout_s: float = 10.0,
    body: dict[str, Any] | None = None,
    pause_s: float = 0.0,
    distinct: bool = True,
) -> LoadResult:
    """``requests`` chat completions from ``clients`` concurrent SDK clients (every
    ``stream_every``-th one streamed); each has its own timeout, no SDK retries."""
    result = LoadResult()
    counter = iter(range(requests))
    payload = body or BODY
    sdk = openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=timeout_s
    )

    def body_of(i: int) -> dict[str, Any]:
        # A distinct first user message per request: distinct conversations, spread over
        # the workers (identical ones would all stick to one worker by prefix affinity).
        messages = payload.get("messages")
        if not isinstance(messages, list) or not distinct:
            return payload
        first = {**messages[0], "content": f"{messages[0]['content']} (request {i})"}
        return {**payload, "messages": [first, *messages[1:]]}

    async def one(i: int) -> None:
        stream = stream_every > 0 and i % stream_every == 0
        body = body_of(i)
        started = time.monotonic()
        try:
            if stream:
                raw = await sdk.chat.completions.with_raw_response.create(
                    **body, stream=True, stream_options={"include_usage": True}
                )
                rid = raw.headers["x-request-id"]
                async for _ in raw.parse():
                    pass
            else:
                raw = await sdk.chat.completions.with_raw_response.create(**body)
                rid = raw.headers["x-request-id"]
                raw.parse()
        except (openai.APIError, OSError) as exc:
            result.error(_kind(exc))
            return
        result.completed.append(rid)
        result.latencies_s.append(time.monotonic() - started)

    async def client() -> None:
        for i in counter:
            result.sent += 1
            await one(i)
            if pause_s:
                await asyncio.sleep(pause_s)

    try:
        await asyncio.wait_for(
            asyncio.gather(*(client() for _ in range(clients))), timeout_s * requests
        )
    finally:
        await sdk.close()
    return result


async def ledger_counts(database_url: str, request_ids: list[str]) -> dict[str, int]:
    """How many ledger rows each of ``request_ids`` has."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(usage_ledger.c.request_id, func.count())
                .where(usage_ledger.c.request_id.in_(request_ids))
                .group_by(usage_ledger.c.request_id)
            )
            return {str(rid): int(n) for rid, n in rows}
    finally:
        await engine.dispose()


async def lost_and_doubled(
    database_url: str, request_ids: list[str], timeout_s: float = 20.0
) -> tuple[int, int]:
    """Wait (bounded) until every completed request is in the ledger; (missing, doubled)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = await ledger_counts(database_url, request_ids) if request_ids else {}
        missing = sum(1 for rid in set(request_ids) if counts.get(rid, 0) == 0)
        doubled = sum(1 for n in counts.values() if n > 1)
        if missing == 0 or time.monotonic() > deadline:
            return missing, doubled
        await asyncio.sleep(0.25)


def sqlite_ledger(data_dir: Path) -> str:
    """The ledger URL of a gateway that runs on its embedded SQLite default."""
    return sqlite_url(data_dir)


def record(fault: str, load: LoadResult, lost: int, doubled: int, **extra: Any) -> None:
    """Append one result line to ``$TOLLWAY_FAULTS_REPORT`` (when set)."""
    path = os.environ.get("TOLLWAY_FAULTS_REPORT")
    if not path:
        return
    line = {
        "fault": fault,
        "sent": load.sent,
        "completed": len(load.completed),
        "errors": load.errors,
        "lost": lost,
        "doubled": doubled,
        "p50_s": sorted(load.latencies_s)[len(load.latencies_s) // 2] if load.latencies_s else None,
        **extra,
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


# Private services: stop/start faults never touch the shared Redis and PostgreSQL.


@dataclass
class PrivateRedis:
    """A ``redis-server`` on a free loopback port, in a temporary directory."""

    port: int = field(default_factory=free_port)
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="tollway-faults-redis-"))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.workdir]
            + ["--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        """``kill -9``: what the append-only file holds is what a restart finds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        from tests.conftest import service_unavailable

        service_unavailable("redis-server", "the binary is not installed")  # fails in CI
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def postgres_bin() -> Path | None:
    """The directory of PostgreSQL's server binaries, if installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    return found[-1].parent if found else None


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb into a temporary directory), on a free port.

    PostgreSQL refuses to run as root; then the cluster is owned by and run as
    the ``postgres`` system user.
    """

    bindir: Path
    port: int = field(default_factory=free_port)
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="tollway-faults-pg-"))

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        # No pipes: the server pg_ctl starts would hold them open (its log goes to a file).
        subprocess.run(
            command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60
        )

    def init(self) -> None:
        os.chmod(self.workdir, 0o777)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
        self._run("initdb", "-D", f"{self.workdir}/data", "-U", "postgres", "-A", "trust")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            f"{self.workdir}/data",
            "-l",
            f"{self.workdir}/log",
            "-o",
            options,
            "-w",
            "start",
        )
        wait_port(self.port)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", f"{self.workdir}/data", "-m", "fast", "-w", "stop")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    import pytest

    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    server = PrivatePostgres(bindir)
    try:
        server.init()
        server.start()
    except (subprocess.SubprocessError, OSError, LookupError) as exc:
        shutil.rmtree(server.workdir, ignore_errors=True)
        pytest.skip(f"cannot run a private PostgreSQL: {exc}")
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(server.workdir, ignore_errors=True)


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    """Wait until something accepts connections on a loopback port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def summary(load: LoadResult) -> dict[str, Any]:
    """A printable summary of a load run (for assertion messages)."""
    data = asdict(load)
    data["completed"] = len(load.completed)
    data.pop("latencies_s")
    return data
