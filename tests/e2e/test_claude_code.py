"""Claude Code, installed from npm (``tests/clients/package.json``), as a real client of
``/v1/messages``: ``claude -p`` with ``ANTHROPIC_BASE_URL`` at a gateway process in
front of an emulated worker completes a turn, and the gateway bills that turn once,
with the token counts Claude Code itself reports.

Claude Code must reach nothing but the gateway: telemetry, the auto-updater and
other traffic are turned off, its home is a fresh directory, and every connection
that is not to loopback goes to a proxy address where nothing listens (so a turn
that needed the network would fail here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import API_KEY, emulator, free_port, gateway, pool
from tests.e2e.test_stream_cancel import _ledger_rows
from tests.waiting import until_sync

pytestmark = pytest.mark.e2e

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
CLAUDE = CLIENTS / "node_modules" / ".bin" / "claude"
MODEL = "agent-small"
PRICES = """
books:
  - name: e2e
    effective_from: 2020-01-01T00:00:00Z
    rates:
      - {id: tokens, input_per_million: "1.00", output_per_million: "2.00"}
"""


def claude_environment(base_url: str, home: Path) -> dict[str, str]:
    """The environment ``claude`` runs in: the gateway, a tenant key, nothing else."""
    dead_proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": API_KEY,
        # The public model names the gateway serves, for every model Claude Code picks.
        "ANTHROPIC_MODEL": MODEL,
        "ANTHROPIC_SMALL_FAST_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": MODEL,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "HTTPS_PROXY": dead_proxy,
        "HTTP_PROXY": dead_proxy,
        "NO_PROXY": "127.0.0.1,localhost",
    }


def _installed() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: Claude Code (npm) cannot run here")
    assert CLAUDE.exists(), (
        f"{CLAUDE} is missing: run `make install` (npm ci in tests/clients) to install "
        "the pinned Claude Code"
    )
    return CLAUDE


def test_claude_code_completes_a_turn_billed_once(tmp_path: Path) -> None:
    claude = _installed()
    data_dir = tmp_path / "data"
    prices = tmp_path / "pricing.yaml"
    prices.write_text(PRICES)
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    with (
        emulator("--instant") as (worker, _),
        gateway(
            tmp_path,
            {"main": pool([worker])},
            {MODEL: {"route": "pool:main"}},
            env={"TOLLWAY_DATA_DIR": str(data_dir)},
            pricing=str(prices),
        ) as base,
    ):
        done = subprocess.run(
            [str(claude), "-p", "Say hello.", "--output-format", "json"],
            env=claude_environment(base, home),
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        result: dict[str, Any] = json.loads(done.stdout)
        assert result["is_error"] is False and result["terminal_reason"] == "completed"
        assert result["result"]
        usage = result["usage"]
        until_sync(lambda: _ledger_rows(data_dir), timeout_s=10, what="the turn in the ledger")
        rows = _ledger_rows(data_dir)
    (row,) = rows  # one turn, one request, billed once
    assert row["status"] == "ok" and row["model"] == MODEL and row["tenant_id"] == "e2e"
    assert row["prompt_tokens"] == usage["input_tokens"] > 0
    assert row["completion_tokens"] == usage["output_tokens"] > 0
    assert row["rate_id"] == "e2e/tokens"
    expected = (usage["input_tokens"] * 1 + usage["output_tokens"] * 2) / 1_000_000
    assert row["cost_micros"] == round(expected * 1_000_000)
