"""Start-up: litellm is imported only when needed, and never reaches the network."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]

#: Runs first in each child: records (and refuses) every non-loopback connection and lookup,
#: and every connection to the trap port that the proxy variables point at.
GUARD = """
import json, os, socket
attempts = []
TRAP = int(os.environ["TEST_TRAP_PORT"])
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo

def _loopback(address):
    if not isinstance(address, tuple) or address[1] == TRAP:
        return False
    return address[0] in ("127.0.0.1", "::1", "localhost")

def connect(self, address):
    if not _loopback(address):
        attempts.append(repr(address))
        raise OSError("network blocked by test")
    return _connect(self, address)

def connect_ex(self, address):
    if not _loopback(address):
        attempts.append(repr(address))
        return 111
    return _connect_ex(self, address)

def getaddrinfo(host, *args, **kwargs):
    if host not in ("127.0.0.1", "::1", "localhost", None):
        attempts.append(repr(host))
        raise socket.gaierror("lookup blocked by test")
    return _getaddrinfo(host, *args, **kwargs)

socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.getaddrinfo = getaddrinfo
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(code: str) -> subprocess.Popen[str]:
    """Start a child running ``code`` (which sets ``result``) under the guard."""
    trap = _closed_port()
    closed = f"http://127.0.0.1:{trap}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LITELLM_", "OPENAI_", "ANTHROPIC_")) and "PROXY" not in k.upper()
    }
    env |= {
        "HTTP_PROXY": closed,
        "HTTPS_PROXY": closed,
        "ALL_PROXY": closed,
        "NO_PROXY": "127.0.0.1,localhost",
        "OPENAI_BASE_URL": closed,
        "ANTHROPIC_BASE_URL": closed,
        "PYTHONPATH": str(ROOT),
        "TEST_TRAP_PORT": str(trap),
    }
    report = "\nprint(json.dumps(result | {'attempts': attempts}))\n"
    return subprocess.Popen(
        [sys.executable, "-c", GUARD + textwrap.dedent(code) + report],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(child: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


OFFLINE = """
import asyncio
from backends.catalog import CatalogEntryConfig, effective_prices
from backends.catalog.library import load_litellm

mini = CatalogEntryConfig(litellm_model="openai/gpt-4o-mini")
sonnet = CatalogEntryConfig(litellm_model="anthropic/claude-sonnet-4-5")
prices = [str(effective_prices(mini).input), str(effective_prices(sonnet).output)]
litellm = load_litellm()
litellm.token_counter(model="gpt-4o-mini", text="hello there")
litellm.token_counter(model="claude-sonnet-4-5", text="hello there")

async def first_calls():
    kinds = []
    for model, base in [
        ("openai/gpt-4o-mini", "http://127.0.0.1:CLOSED/v1"),
        ("anthropic/claude-sonnet-4-5", "http://127.0.0.1:CLOSED"),
    ]:
        try:
            await litellm.acompletion(
                model=model, api_base=base, api_key="k", max_retries=0, max_tokens=5,
                messages=[{"role": "user", "content": "hi"}],
            )
        except Exception as exc:
            kinds.append(type(exc).__name__)
    return kinds

result = {"prices": prices, "errors": asyncio.run(first_calls())}
"""

LAZY = """
import asyncio, sys
import gateway.app
import backends.catalog
from backends.catalog import CatalogBackend, CatalogEntryConfig

config = CatalogEntryConfig(
    litellm_model="hosted_vllm/m",
    api_base="http://127.0.0.1:1/v1",
    price={"input_per_million": "1", "output_per_million": "1"},
)
backend = CatalogBackend("direct", config)

async def cycle():
    await backend.start()
    ready = backend.is_ready()
    await backend.stop()
    return ready

ready = asyncio.run(cycle())
result = {"litellm": "litellm" in sys.modules, "ready": ready}
"""

#: The control: a bare import of litellm tries to fetch its cost map, and the guard sees it.
CONTROL = "import litellm\nresult = {}"


@pytest.fixture(scope="module")
def children() -> dict[str, dict[str, Any]]:
    """Every child's result; they run side by side (each imports litellm, which is slow)."""
    started = {
        "offline": _start(OFFLINE.replace("CLOSED", str(_closed_port()))),
        "lazy": _start(LAZY),
        "control": _start(CONTROL),
    }
    return {name: _result(child) for name, child in started.items()}


def test_litellm_prices_and_first_call_make_no_network_call(
    children: dict[str, dict[str, Any]],
) -> None:
    result = children["offline"]
    assert result["attempts"] == []
    assert all(float(p) > 0 for p in result["prices"])
    assert len(result["errors"]) == 2


def test_gateway_without_catalog_entries_does_not_import_litellm(
    children: dict[str, dict[str, Any]],
) -> None:
    assert children["lazy"] == {"litellm": False, "ready": True, "attempts": []}


def test_the_guard_sees_litellms_fetch_when_not_told_to_stay_offline(
    children: dict[str, dict[str, Any]],
) -> None:
    assert children["control"]["attempts"]
