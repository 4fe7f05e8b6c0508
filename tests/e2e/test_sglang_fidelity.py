"""The gateway against ``tollway emulate`` processes in their faithful (default) mode.

The emulators answer as SGLang 0.5.6.post1 does: ``/health`` after a one-token
generation and a 1 s wait (``http_server.py`` ``health_generate``),
``/get_server_info`` with a deprecation warning per call, ``max_tokens`` before
``max_completion_tokens`` (``protocol.py`` ``to_sampling_params``).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backends.sglang.config import PoolConfig
from backends.sglang.pool import SGLangPool
from tests.e2e.processes import API_KEY, emulator, gateway

pytestmark = pytest.mark.e2e

MODEL = "llama-3.1-8b-instruct"


@pytest.fixture(scope="module")
def workers() -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """Two emulated workers with SGLang's own health timing (no fast flags)."""
    with emulator("--instant") as w1, emulator("--instant") as w2:
        yield [w1, w2]


async def test_a_pool_stays_up_on_sglangs_slow_health_endpoint(
    workers: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    """With the default health settings every probe takes about 1 s and none fails:
    the workers stay up round after round, and capacity comes from ``/server_info``."""
    urls = [url for url, _ in workers]
    config = PoolConfig.model_validate(
        {"gpu": "h100", "model": {"name": MODEL}, "workers": urls, "health": {"interval_s": 0.2}}
    )
    pool = SGLangPool("p", config)
    await pool.start()
    try:
        assert all(w.healthy for w in pool.workers)
        assert all(w.capacity_tokens and w.capacity_tokens > 0 for w in pool.workers)
        # Three probe rounds (interval + ~1 s each), watched the whole time.
        deadline = time.monotonic() + 3 * (config.health.interval_s + 1.0) + 0.5
        while time.monotonic() < deadline:
            assert all(w.healthy for w in pool.workers)
            await asyncio.sleep(0.05)
    finally:
        await pool.stop()


def test_the_gateway_never_calls_the_deprecated_server_info(tmp_path: Path) -> None:
    """``http_server.py`` ``get_server_info`` logs a warning per call; the gateway asks
    ``/server_info``. The emulator logs the same warning, so its output shows it."""
    # A worker of this test's own, so that its whole output belongs to it.
    with emulator("--instant") as (fresh, fresh_proc):
        pools = {"p": {"gpu": "h100", "model": {"name": MODEL}, "workers": [fresh]}}
        with gateway(tmp_path, pools=pools, models={"m": {"route": "pool:p"}}) as base:
            r = httpx.post(
                f"{base}/v1/chat/completions",
                headers={"Authorization": f"Bearer {API_KEY}"},
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["prompt_tokens"] == 36  # Llama 3.1's template
        httpx.get(f"{fresh}/get_server_info", timeout=5).raise_for_status()  # one on purpose
        fresh_proc.terminate()
        out = fresh_proc.communicate(timeout=10)[0].decode(errors="replace")
    assert out.count("Endpoint '/get_server_info' is deprecated") == 1, out[-2000:]


def test_an_agent_profile_caps_both_token_fields(
    workers: list[tuple[str, subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    """SGLang generates ``max_tokens or max_completion_tokens``: a body with a small
    ``max_completion_tokens`` and a huge ``max_tokens`` must not get past the cap."""
    urls = [url for url, _ in workers]
    pools = {"p": {"gpu": "h100", "model": {"name": MODEL}, "workers": urls}}
    agent_types = {"capped": {"model": "m", "max_tokens": 8}}
    with gateway(
        tmp_path, pools=pools, models={"m": {"route": "pool:p"}}, agent_types=agent_types
    ) as base:
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": "Write a long story."}],
            "max_tokens": 500,
            "max_completion_tokens": 4,
            "ignore_eos": True,
        }
        r = httpx.post(
            f"{base}/v1/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}", "X-Agent-Type": "capped"},
            json=body,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 8  # the cap, on the field SGLang uses


def test_a_request_over_the_context_length_gets_sglangs_400(tmp_path: Path) -> None:
    """``tokenizer_manager.py`` ``_validate_one_request``: input + ``max_tokens`` at or
    over the context length is a 400 (a non-streamed request answers it at once):
    the client gets it in OpenAI's error shape, with SGLang's reason, and no retry."""
    with emulator("--instant", "--context-length", "64") as (worker, _):
        pools = {"p": {"gpu": "h100", "model": {"name": MODEL}, "workers": [worker]}}
        with gateway(tmp_path, pools=pools, models={"m": {"route": "pool:p"}}) as base:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            headers = {"Authorization": f"Bearer {API_KEY}"}
            ok = httpx.post(
                f"{base}/v1/chat/completions", headers=headers, json={**body, "max_tokens": 27}
            )
            assert ok.status_code == 200, ok.text
            r = httpx.post(
                f"{base}/v1/chat/completions", headers=headers, json={**body, "max_tokens": 28}
            )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "maximum context length of 64 tokens" in error["message"]
