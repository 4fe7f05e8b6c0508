"""A gateway killed (-9) mid-stream: the request still has exactly one ledger row,
settled ``interrupted``, once a gateway runs a writer round after the grace period;
the provisional record journaled at the first byte is what survives the crash."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import API_KEY, emulator, pool, start_gateway, stop, write_config

pytestmark = pytest.mark.e2e

HEADERS = {"authorization": f"Bearer {API_KEY}"}


def ledger_rows(data_dir: Path, request_id: str) -> list[dict[str, object]]:
    path = data_dir / "tollway.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        try:
            query = "SELECT * FROM usage_ledger WHERE request_id = ?"
            return [dict(r) for r in db.execute(query, (request_id,))]
        except sqlite3.OperationalError:  # the table is not there yet
            return []


def wait_for_row(data_dir: Path, request_id: str, status: str) -> list[dict[str, object]]:
    """The request's ledger rows once one has ``status`` (or at the deadline)."""
    deadline = time.monotonic() + 30
    rows = ledger_rows(data_dir, request_id)
    while time.monotonic() < deadline:
        if any(row["status"] == status for row in rows):
            break
        time.sleep(0.1)
        rows = ledger_rows(data_dir, request_id)
    return rows


def test_a_stream_cut_by_a_gateway_crash_is_settled_interrupted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"TOLLWAY_DATA_DIR": str(data_dir)}
    with emulator("--speed", "1") as (worker, _):
        config = write_config(
            tmp_path,
            {"main": pool([worker])},
            {"agent-small": {"route": "pool:main"}},
            metering={"provisional_grace_s": 1},
        )
        body = {
            "model": "agent-small",
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
            "max_tokens": 2000,
            "stream": True,
            "ignore_eos": True,  # SGLang's: generate all max_tokens (takes over 20 s)
        }
        base, proc = start_gateway(config, env)
        try:
            with (
                httpx.Client(timeout=10) as client,
                client.stream(
                    "POST", base + "/v1/chat/completions", json=body, headers=HEADERS
                ) as r,
            ):
                assert r.status_code == 200
                cut_id = r.headers["x-request-id"]
                # The iterator stays referenced: a closed one would close the connection,
                # and the gateway would bill a client that left, not a crash.
                chunks = r.iter_raw()
                events = 0
                while events < 5:
                    events += next(chunks).count(b"data: ")
                proc.send_signal(signal.SIGKILL)  # mid-stream, no chance to clean up
                proc.wait(timeout=10)
        finally:
            stop(proc)

        base, proc = start_gateway(config, env)  # its writer drains what the dead one left
        try:
            rows = wait_for_row(data_dir, cut_id, "interrupted")
            (row,) = rows
            assert row["status"] == "interrupted"
            assert row["usage_source"] == "estimated"
            prompt = row["prompt_tokens"]
            assert isinstance(prompt, int) and prompt > 0
            assert row["completion_tokens"] == 0 and row["tenant_id"] == "e2e"

            # A stream that finishes leaves one row, ok, and no provisional behind.
            short = {**body, "max_tokens": 8, "ignore_eos": False}
            with httpx.Client(timeout=30) as client:
                done = client.post(base + "/v1/chat/completions", json=short, headers=HEADERS)
            assert done.status_code == 200 and done.text.endswith("data: [DONE]\n\n")
            rows = wait_for_row(data_dir, done.headers["x-request-id"], "ok")
            assert [row["status"] for row in rows] == ["ok"]
        finally:
            stop(proc)
