"""A gateway sent SIGTERM: readiness false at once, in-flight requests finish, exit 0, no loss.

Behaviour under test (one worker process, :class:`gateway.drain.DrainingServer`):
with ``server.shutdown_delay_s`` > 0 the gateway keeps its listening socket for
that long and ``/readyz`` answers 503 ``draining``; then (or at once, with no
delay) the socket closes, so new connections are refused, while requests
already in flight run to completion within ``server.drain_timeout_s``; the
usage buffer is flushed into the ledger and the process exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.processes import (
    API_KEY,
    emulator,
    metric_samples,
    pool,
    start_gateway,
    stop,
    write_config,
)
from tests.faults.support import (
    BODY,
    LoadResult,
    lost_and_doubled,
    record,
    run_load,
    sqlite_ledger,
    summary,
)

pytestmark = pytest.mark.e2e

LATENCY_S = 2.0


def _start(tmp: Path, worker: str, **server: float) -> tuple[str, subprocess.Popen[bytes], Path]:
    data = tmp / "data"
    config = write_config(
        tmp,
        pools={"p": pool([worker])},
        models={"m": {"route": "pool:p"}},
        server={"drain_timeout_s": 10, **server},
    )
    url, proc = start_gateway(config, {"TOLLWAY_DATA_DIR": str(data)})
    return url, proc, data


async def _in_flight(url: str, stream: bool) -> tuple[int, str, bool]:
    """One slow request; (status, request id, finished with its last event)."""
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=30
    ) as sdk:
        if stream:
            raw = await sdk.chat.completions.with_raw_response.create(
                **BODY, stream=True, stream_options={"include_usage": True}
            )
            usage = None
            async for chunk in raw.parse():
                usage = chunk.usage or usage
            return raw.http_response.status_code, raw.headers["x-request-id"], usage is not None
        raw = await sdk.chat.completions.with_raw_response.create(**BODY)
        reply = raw.parse()
        return raw.http_response.status_code, raw.headers["x-request-id"], reply.usage is not None


def _probe(url: str) -> str:
    try:
        resp = httpx.get(f"{url}/readyz", timeout=1)
    except httpx.TimeoutException:
        return "timeout"
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
        # Refused, or accepted into the backlog in the instant the socket closed and then
        # dropped unanswered (EOF) or reset by the kernel (ECONNRESET, a ReadError):
        # either way the gateway no longer takes requests.
        return "refused"
    code = resp.json().get("error", {}).get("code") if resp.status_code != 200 else None
    return f"{resp.status_code} {code}" if code else str(resp.status_code)


def _metric(url: str, name: str) -> float:
    return sum(metric_samples(url, name))


async def _until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll ``check`` (run off the loop: it may do blocking I/O) until true."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"not reached in {timeout_s}s: {what}"
        await asyncio.sleep(0.02)


def test_sigterm_drains_in_flight_requests_with_readiness_false(tmp_path: Path) -> None:
    with emulator("--instant", "--added-latency-ms", str(int(LATENCY_S * 1000))) as (worker, _):
        url, proc, data = _start(tmp_path, worker, shutdown_delay_s=1.0)
        try:
            assert _probe(url) == "200"

            async def scenario() -> tuple[list[tuple[int, str, bool]], list[str], float]:
                flights = [asyncio.create_task(_in_flight(url, stream)) for stream in (False, True)]
                await _until(
                    lambda: _metric(url, "tollway_worker_in_flight") == 2,
                    "both requests at the worker",
                )
                signalled = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                # The signal is handled asynchronously: from the first probe that is not
                # ready on, readiness must stay false until nothing listens.
                await _until(lambda: _probe(url) != "200", "readiness turned false")
                probes: list[str] = []
                while time.monotonic() - signalled < 2.5:
                    probes.append(await asyncio.to_thread(_probe, url))
                    await asyncio.sleep(0.1)
                return list(await asyncio.gather(*flights)), probes, signalled

            flights, probes, signalled = asyncio.run(scenario())
            code = proc.wait(timeout=15)
            exited_after = time.monotonic() - signalled
        finally:
            stop(proc)
    # Readiness is false once the signal is handled: 503 during the delay, then nothing
    # listens any more (the requests were still in flight: LATENCY_S is longer).
    assert probes[0] == "503 draining", probes
    assert "refused" in probes and "200" not in probes, probes
    assert probes.index("refused") > 0
    assert set(probes[: probes.index("refused")]) == {"503 draining"}, probes
    assert all(status == 200 and finished for status, _, finished in flights), flights
    assert code == 0
    assert exited_after < 1.0 + 10 + 2  # delay + drain timeout + slack
    ids = [rid for _, rid, _ in flights]
    lost, doubled = asyncio.run(lost_and_doubled(sqlite_ledger(data), ids, timeout_s=2))
    assert (lost, doubled) == (0, 0)


def test_sigterm_under_load_loses_nothing(tmp_path: Path) -> None:
    """No delay: the socket closes at once (new requests are refused), in-flight ones finish."""
    with emulator("--instant", "--added-latency-ms", "300") as (worker, _):
        url, proc, data = _start(tmp_path, worker, shutdown_delay_s=0.0)
        try:

            async def scenario() -> LoadResult:
                load = asyncio.create_task(
                    run_load(url, requests=80, clients=6, timeout_s=10, pause_s=0.0)
                )
                # Some requests done and some at the worker when the signal arrives.
                await _until(
                    lambda: (
                        _metric(url, "tollway_requests_total") >= 12
                        and _metric(url, "tollway_worker_in_flight") >= 1
                    ),
                    "load under way",
                )
                proc.send_signal(signal.SIGTERM)
                # uvicorn's main loop notices the signal within its 0.1 s tick.
                await _until(lambda: _probe(url) == "refused", "the socket closed")
                return await load

            load = asyncio.run(scenario())
            code = proc.wait(timeout=15)
        finally:
            stop(proc)
    assert code == 0
    assert load.completed, summary(load)
    # After the signal, new connections are refused; nothing else may fail.
    assert set(load.errors) <= {"APIConnectionError"}, summary(load)
    lost, doubled = asyncio.run(lost_and_doubled(sqlite_ledger(data), load.completed, 2))
    record("gateway SIGTERM under load", load, lost, doubled)
    assert (lost, doubled) == (0, 0)
