"""The gateway and the ledger writer started at the same moment on a fresh database.

Kubernetes starts the writer and the gateways at once: both migrate the schema,
one at a time, and both start, every time (a few rounds, on SQLite and PostgreSQL);
then traffic through the gateway reaches the ledger through the writer.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import admin_sql
from tests.e2e.processes import emulator, free_port, pool, wait_ok, write_config
from tests.faults.reconcile import Traffic, mixed_traffic, reconcile, start_writer, stop_all
from tests.faults.support import record, sqlite_ledger

pytestmark = pytest.mark.e2e

ROUNDS = 3


def _gateway(config: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    return subprocess.Popen(
        [*args, "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def test_gateway_and_writer_started_together_on_a_fresh_database(
    tmp_path: Path, redis_url: str, postgres_url: str, database: str
) -> None:
    with emulator("--instant") as (worker, _):
        for round_ in range(ROUNDS):
            data = tmp_path / f"data-{round_}"
            prefix = f"faults-{uuid.uuid4().hex[:8]}:"
            name = f"tollway_faults_{uuid.uuid4().hex[:10]}"
            if database == "postgres":
                admin_sql(postgres_url, f'CREATE DATABASE "{name}"')
                database_url = f"{postgres_url.rsplit('/', 1)[0]}/{name}"
                db_env = {"DATABASE_URL": database_url}
            else:
                database_url, db_env = sqlite_ledger(data), {}
            config = write_config(
                tmp_path,
                pools={"p": pool([worker])},
                models={"m": {"route": "pool:p"}},
                limits={"key_prefix": prefix},
                idempotency={"key_prefix": prefix},
                metering={"writer": "external"},
            )
            env = {"TOLLWAY_DATA_DIR": str(data), "REDIS_URL": redis_url, **db_env}
            port = free_port()
            gateway = _gateway(config, env, port)
            writer = start_writer(env, tmp_path / f"writer-{round_}.log", "--config", str(config))
            traffic = Traffic()
            try:
                wait_ok(f"http://127.0.0.1:{port}/healthz", gateway, timeout_s=60)
                asyncio.run(
                    mixed_traffic(
                        f"http://127.0.0.1:{port}", traffic, requests=12, tag=f"r{round_}"
                    )
                )
                result = asyncio.run(reconcile(database_url, traffic, timeout_s=10))
                assert writer.poll() is None, (tmp_path / f"writer-{round_}.log").read_text()
            finally:
                stop_all(writer, gateway)
                if database == "postgres":
                    admin_sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            record(f"gateway and writer started together, {database}", traffic.load(), 0, 0)
            assert result.holds, (round_, result, traffic.kinds())
            assert len(traffic.completed) == len(traffic.answers), traffic.kinds()
