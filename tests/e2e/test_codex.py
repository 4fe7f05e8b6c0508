"""Codex CLI, installed from npm (``tests/clients/package.json``), as a real client of
``/v1/responses``: ``codex exec`` with a custom model provider (``wire_api =
"responses"``) at a gateway process in front of an emulated worker completes a turn,
and the gateway bills every model request of that turn once, with the token counts
Codex itself reports.

Codex sends, unchanged, what it sends to OpenAI: ``store: false``, ``include`` of
encrypted reasoning, ``prompt_cache_key``, a hosted ``web_search`` tool and a
``namespace`` tool beside its function tools (docs/responses.md says what the gateway
does with each). The emulator answers a first request that offers tools with a tool
call; Codex runs it (read-only sandbox, never asking for approval), sends its output
back, and the emulator answers that with text: a turn of two or more requests.

Codex must reach nothing but the gateway: its home (``CODEX_HOME``) and ``HOME`` are
fresh directories, and every connection that is not to loopback goes to a proxy
address where nothing listens.
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
from tests.e2e.test_claude_code import CLIENTS, MODEL, PRICES
from tests.e2e.test_stream_cancel import _ledger_rows
from tests.waiting import until_sync

pytestmark = pytest.mark.e2e

CODEX = CLIENTS / "node_modules" / ".bin" / "codex"


def codex_home(base_url: str, home: Path) -> Path:
    """A ``CODEX_HOME`` whose config.toml points a custom provider at the gateway."""
    home.mkdir()
    (home / "config.toml").write_text(
        f'model = "{MODEL}"\n'
        'model_provider = "tollway"\n'
        'approval_policy = "never"\n'
        'sandbox_mode = "read-only"\n'
        "\n"
        "[model_providers.tollway]\n"
        'name = "Tollway"\n'
        f'base_url = "{base_url}/v1"\n'
        'env_key = "TOLLWAY_API_KEY"\n'
        'wire_api = "responses"\n'
    )
    return home


def codex_environment(config_home: Path, home: Path) -> dict[str, str]:
    """The environment ``codex`` runs in: its config, a tenant key, nothing else."""
    dead_proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CODEX_HOME": str(config_home),
        "TOLLWAY_API_KEY": API_KEY,
        "HTTPS_PROXY": dead_proxy,
        "HTTP_PROXY": dead_proxy,
        "NO_PROXY": "127.0.0.1,localhost",
    }


def _installed() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: Codex (npm) cannot run here")
    assert CODEX.exists(), (
        f"{CODEX} is missing: run `make install` (npm ci in tests/clients) to install "
        "the pinned Codex"
    )
    return CODEX


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_codex_exec_completes_a_turn_billed_once(tmp_path: Path) -> None:
    codex = _installed()
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
            [str(codex), "exec", "--json", "--skip-git-repo-check", "Say hello."],
            env=codex_environment(codex_home(base, tmp_path / "codex"), home),
            cwd=work,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        events = _events(done.stdout)
        kinds = [e["type"] for e in events]
        assert "turn.failed" not in kinds and "error" not in kinds, done.stdout[-3000:]
        (completed,) = [e for e in events if e["type"] == "turn.completed"]
        messages = [
            e["item"]["text"]
            for e in events
            if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"
        ]
        assert messages and messages[-1]
        thread = next(e["thread_id"] for e in events if e["type"] == "thread.started")
        usage = completed["usage"]
        until_sync(
            lambda: (
                sum(r["completion_tokens"] for r in _ledger_rows(data_dir))
                >= usage["output_tokens"]
            ),
            timeout_s=10,
            what="the turn's requests in the ledger",
        )
        rows = _ledger_rows(data_dir)
    # Every model request of the turn billed once: the ledger adds up to Codex's usage.
    assert rows and all(r["status"] == "ok" and r["model"] == MODEL for r in rows)
    assert all(r["tenant_id"] == "e2e" and r["rate_id"] == "e2e/tokens" for r in rows)
    assert sum(r["prompt_tokens"] for r in rows) == usage["input_tokens"] > 0
    assert sum(r["cached_tokens"] for r in rows) == usage["cached_input_tokens"]
    assert sum(r["completion_tokens"] for r in rows) == usage["output_tokens"] > 0
    # Codex's prompt_cache_key (its thread id) makes the turn's requests one session.
    assert {r["session_id"] for r in rows} == {thread}
    for row in rows:
        expected = (row["prompt_tokens"] * 1 + row["completion_tokens"] * 2) / 1_000_000
        assert row["cost_micros"] == round(expected * 1_000_000)
