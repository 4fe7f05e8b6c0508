"""A client that leaves mid-stream, against a real gateway process and a real-time emulator:
the request is billed once, for what was delivered, as soon as the client is gone."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import API_KEY, emulator, gateway, pool

pytestmark = pytest.mark.e2e

MAX_TOKENS = 2000


def _ledger_rows(data_dir: Path) -> list[dict[str, object]]:
    path = data_dir / "tollway.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM usage_ledger")]
        except sqlite3.OperationalError:  # the table is not there yet
            return []


def test_a_client_leaving_mid_stream_is_billed_once_for_what_it_got(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with (
        emulator("--speed", "1") as (worker, _),
        gateway(
            tmp_path,
            pools={"main": pool([worker])},
            models={"agent-small": {"route": "pool:main"}},
            env={"TOLLWAY_DATA_DIR": str(data_dir)},
        ) as base,
    ):
        body = {
            "model": "agent-small",
            "messages": [{"role": "user", "content": "Write a long story."}],
            "max_tokens": MAX_TOKENS,
            "stream": True,
            "ignore_eos": True,  # SGLang's: generate all max_tokens (passed through)
        }
        headers = {"authorization": f"Bearer {API_KEY}"}
        with (
            httpx.Client(timeout=10) as client,
            client.stream("POST", base + "/v1/chat/completions", json=body, headers=headers) as r,
        ):
            assert r.status_code == 200
            request_id = r.headers["x-request-id"]
            events = 0
            for chunk in r.iter_raw():
                events += chunk.count(b"data: ")
                if events >= 5:
                    break
            left_at = time.monotonic()
        # Leaving the block closed the connection mid-stream.

        deadline = left_at + 10
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            rows = [row for row in _ledger_rows(data_dir) if row["request_id"] == request_id]
            if rows:
                break
            time.sleep(0.1)
        billed_after = time.monotonic() - left_at
    (row,) = rows
    # Generating all of MAX_TOKENS takes the emulator over 20 s: the gateway let go at once.
    assert billed_after < 5
    assert row["status"] == "client_cancelled"
    assert row["usage_source"] == "counted"
    completion = row["completion_tokens"]
    assert isinstance(completion, int) and 1 <= completion < MAX_TOKENS
