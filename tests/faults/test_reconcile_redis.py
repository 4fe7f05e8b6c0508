"""Redis killed (``kill -9``) under mixed traffic and restarted from its append-only
file, with the ledger writer inside the gateway and as a process of its own.

While Redis is down the gateway spools usage records locally (and refuses requests
with an idempotency key: ``idempotency.on_store_outage: fail_closed``). Once Redis
is back, every request a client saw complete must be in the ledger within
:data:`LEDGER_BOUND_S`, while the gateway keeps running: an external writer on the
same host drains the sealed spool segments, one elsewhere (its own data directory,
as in another pod) gets them through the stream, where the gateway moves them. The
ledger-lag gauge shows the spooled records while they wait.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.processes import emulator, pool, start_gateway, write_config
from tests.faults.reconcile import (
    Traffic,
    ledger_database,
    metric,
    mixed_traffic,
    reconcile,
    start_writer,
    stop_all,
    wait_for,
)
from tests.faults.support import private_redis, record

pytestmark = pytest.mark.e2e

#: Spool sealing (1 s) + the gateway moving the spool to the stream (every 1 s) + a
#: writer round (about 1.5 s), with room for a loaded CI machine.
LEDGER_BOUND_S = 10.0
LAG = "tollway_ledger_lag_seconds"


@pytest.mark.parametrize(
    ("writer", "database"),
    [
        ("external", "sqlite"),  # the writer shares the gateway's data directory
        ("external", "postgres"),  # the writer elsewhere: it cannot see the spool
        ("inline", "sqlite"),
        pytest.param("inline", "postgres", marks=pytest.mark.slow),
    ],
)
def test_redis_killed_and_restarted(
    tmp_path: Path, request: pytest.FixtureRequest, writer: str, database: str
) -> None:
    data = tmp_path / "data"
    database_url, db_env = ledger_database(database, data, request)
    shares_spool = database == "sqlite"
    with private_redis() as redis, emulator("--instant") as (worker, _):
        config = write_config(
            tmp_path,
            pools={"p": pool([worker])},
            models={"m": {"route": "pool:p"}},
            limits={"redis_timeout_s": 0.25, "outage_retry_s": 0.5},
            metering={"writer": writer, "claim_idle_ms": 500},
        )
        env = {"TOLLWAY_DATA_DIR": str(data), "REDIS_URL": redis.url, **db_env}
        url, gateway = start_gateway(config, env)
        external = None
        if writer == "external":
            writer_data = data if shares_spool else tmp_path / "writer-data"
            external = start_writer(
                {**env, "TOLLWAY_DATA_DIR": str(writer_data)},
                tmp_path / "writer.log",
                "--claim-idle-ms",
                "500",
            )
        traffic = Traffic()
        try:
            asyncio.run(mixed_traffic(url, traffic, requests=40, tag="before"))
            redis.kill()
            asyncio.run(mixed_traffic(url, traffic, requests=60, tag="during"))
            if writer == "external" and not shares_spool:
                wait_for(
                    lambda: (metric(url, LAG) or 0.0) >= 1.0,
                    15,
                    "the ledger-lag gauge to count the spooled records",
                )
            redis.start()
            asyncio.run(mixed_traffic(url, traffic, requests=40, tag="after"))
            result = asyncio.run(reconcile(database_url, traffic, LEDGER_BOUND_S))
            assert gateway.poll() is None, "the gateway must keep running"
            if writer == "external" and not shares_spool:
                wait_for(lambda: (metric(url, LAG) or 0.0) < 5.0, 15, "the ledger lag to fall")
        finally:
            stop_all(external, gateway)
    kinds = traffic.kinds()
    fault = f"Redis kill -9 and restart, {writer} writer, {database}"
    record(fault, traffic.load(), len(result.missing), 0)
    assert result.holds, (result, kinds)
    assert len(traffic.completed) >= 100, kinds  # served throughout, replays refused
    assert set(kinds) <= {"ok", "503"}, kinds
