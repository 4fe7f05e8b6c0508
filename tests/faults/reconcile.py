"""Mixed traffic through real processes, reconciled with the ledger by request id.

:func:`mixed_traffic` sends a bounded number of chat completions from a few
concurrent clients: every other one streamed, each in one of a few sessions
(``X-Session-Id``), and every sixth one sent twice with one ``Idempotency-Key`` (the
second answer is a replay, naming the billed request in
``x-tollway-original-request-id``). Each answer is kept: the request id the gateway
gave it, the request billed for it, and whether the client saw it complete.

:func:`reconcile` then compares the answers with the ledger (a fresh database per
test, so every row belongs to this test): exactly one ``ok`` row for every request a
client saw complete, no row for a replay, no ``ok`` row for a request answered with an
error (never admitted, or failed), and no ``ok`` row beyond those except for requests
whose fate the client could not learn (no response: a connection cut, a timeout).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select

from billing.tables import usage_ledger
from gateway.idempotency.record import ORIGINAL_REQUEST_ID
from tests.e2e.processes import API_KEY, stop
from tests.faults.support import BODY, LoadResult, sqlite_ledger
from tollway.database import create_engine


@dataclass(frozen=True)
class Answer:
    """What a client saw of one request."""

    request_id: str | None  # x-request-id; None when no response came
    billed_id: str | None  # the request billed for it (the original, for a replay)
    completed: bool
    kind: str  # "ok", an HTTP status, or the exception's name
    replay: bool = False


@dataclass
class Traffic:
    """Every answer of one or more traffic runs."""

    answers: list[Answer] = field(default_factory=list)

    @property
    def completed(self) -> list[Answer]:
        return [a for a in self.answers if a.completed]

    def load(self) -> LoadResult:
        """The answers as the suite's report line counts them."""
        result = LoadResult(sent=len(self.answers))
        result.completed = [a.billed_id for a in self.completed if a.billed_id]
        for answer in self.answers:
            if not answer.completed:
                result.error(answer.kind)
        return result

    def kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for answer in self.answers:
            counts[answer.kind] = counts.get(answer.kind, 0) + 1
        return counts


async def mixed_traffic(
    url: str,
    traffic: Traffic,
    *,
    requests: int,
    clients: int = 4,
    timeout_s: float = 10.0,
    tag: str = "",
) -> None:
    """Send ``requests`` requests (plus one repeat per idempotency key) to ``url``,
    appending each answer to ``traffic``."""
    counter = iter(range(requests))
    sdk = openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=timeout_s
    )

    async def one(i: int, headers: dict[str, str], stream: bool) -> Answer:
        body = {
            **BODY,
            "messages": [{"role": "user", "content": f"Say something ({tag} {i})."}],
        }
        try:
            if stream:
                raw = await sdk.chat.completions.with_raw_response.create(
                    **body,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers=headers,
                )
                rid = raw.headers.get("x-request-id")
                async for _ in raw.parse():
                    pass
            else:
                raw = await sdk.chat.completions.with_raw_response.create(
                    **body, extra_headers=headers
                )
                rid = raw.headers.get("x-request-id")
                raw.parse()
        except openai.APIStatusError as exc:
            rid = exc.response.headers.get("x-request-id")
            return Answer(rid, None, False, str(exc.status_code))
        except (openai.APIError, httpx.HTTPError, OSError) as exc:  # no answer, or a cut one
            return Answer(None, None, False, type(exc).__name__)
        original = raw.headers.get(ORIGINAL_REQUEST_ID)
        return Answer(rid, original or rid, True, "ok", replay=original is not None)

    async def client() -> None:
        for i in counter:
            headers = {"X-Session-Id": f"{tag}session-{i % 5}"}
            if i % 6 == 0:
                headers["Idempotency-Key"] = f"{tag}key-{i}"
                traffic.answers.append(await one(i, headers, stream=False))
                traffic.answers.append(await one(i, headers, stream=False))  # a repeat
            else:
                traffic.answers.append(await one(i, headers, stream=i % 2 == 1))

    try:
        await asyncio.wait_for(
            asyncio.gather(*(client() for _ in range(clients))), timeout_s * requests
        )
    finally:
        await sdk.close()


@dataclass
class Reconciliation:
    """How the ledger compares with the answers (every list should be empty)."""

    missing: list[str]  # completed, no ledger row
    not_ok: list[str]  # completed, a row whose status is not ok
    replay_rows: list[str]  # a replay's own request id has a row
    refused_billed: list[str]  # answered with an error, yet an ok row
    unexplained_ok: int  # ok rows beyond the completed ones and the unknown fates
    rows: int = 0

    @property
    def holds(self) -> bool:
        return not (
            self.missing
            or self.not_ok
            or self.replay_rows
            or self.refused_billed
            or self.unexplained_ok
        )


async def ledger_rows(database_url: str) -> dict[str, str]:
    """Every ledger row: request id -> status."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(select(usage_ledger.c.request_id, usage_ledger.c.status))
            return {str(rid): str(status) for rid, status in result}
    finally:
        await engine.dispose()


def compare(traffic: Traffic, rows: dict[str, str]) -> Reconciliation:
    billed = {a.billed_id for a in traffic.completed if a.billed_id}
    unknown_fate = sum(1 for a in traffic.answers if a.request_id is None)
    ok_rows = {rid for rid, status in rows.items() if status == "ok"}
    return Reconciliation(
        missing=sorted(b for b in billed if b not in rows),
        not_ok=sorted(b for b in billed if b in rows and rows[b] != "ok"),
        replay_rows=sorted(
            a.request_id
            for a in traffic.answers
            if a.replay and a.request_id and a.request_id != a.billed_id and a.request_id in rows
        ),
        refused_billed=sorted(
            a.request_id
            for a in traffic.answers
            if not a.completed and a.request_id and rows.get(a.request_id) == "ok"
        ),
        unexplained_ok=max(0, len(ok_rows - billed) - unknown_fate),
        rows=len(rows),
    )


async def reconcile(database_url: str, traffic: Traffic, timeout_s: float) -> Reconciliation:
    """Wait (at most ``timeout_s``) until no completed request is missing; compare."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = compare(traffic, await ledger_rows(database_url))
        if not result.missing or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


def ledger_database(
    database: str, data: Path, request: pytest.FixtureRequest
) -> tuple[str, dict[str, str]]:
    """The ledger for ``database`` (``sqlite``: the gateway's embedded file under
    ``data``; ``postgres``: a fresh database) and the environment that selects it."""
    if database == "postgres":
        url: str = request.getfixturevalue("postgres_database")
        return url, {"DATABASE_URL": url}
    return sqlite_ledger(data), {}


def start_writer(env: dict[str, str], log: Path, *flags: str) -> subprocess.Popen[bytes]:
    """``tollway billing worker`` (the external ledger writer) with ``env`` added; its
    output goes to ``log`` (a pipe nobody reads would fill and stop it)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "billing", "worker", "--linger-ms", "50", *flags],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )


def metric(url: str, name: str) -> float | None:
    """A gauge's value from the gateway's ``/metrics`` (None when absent)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(f"{name} ") or line.startswith(f"{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """:func:`wait_for` inside an event loop (traffic runs meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate()`` until true or the deadline; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def stop_all(*procs: subprocess.Popen[bytes] | None) -> None:
    for proc in procs:
        if proc is not None:
            stop(proc)
