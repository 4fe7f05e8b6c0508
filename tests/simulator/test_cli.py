"""The real CLI process: ``python -m simulator emulate`` on a loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "emulator exited early"
        try:
            if httpx.get(f"{base}/health", timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("emulator did not become healthy")


def _stop(proc: subprocess.Popen[bytes]) -> str:
    """Stop the process (if still running) and return its stdout."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    out = proc.stdout.read().decode() if proc.stdout else ""
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()
    return out


def _start(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "simulator", "emulate", "--instant", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, f"http://127.0.0.1:{port}"


@pytest.mark.e2e
def test_cli_serves_chat_and_dies_for_real() -> None:
    proc, base = _start("--die-after", "2", "--served-model-name", "agent-small")
    try:
        _wait_healthy(base, proc)
        models = httpx.get(f"{base}/v1/models").json()
        assert models["data"][0]["id"] == "agent-small"
        body = {"model": "agent-small", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=5)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=5)
        assert r.status_code == 200
        assert proc.wait(timeout=5) == 70  # die_after=2: the process exits on its own
    finally:
        out = _stop(proc)
    assert "SGLang emulator ready" in out


@pytest.mark.e2e
def test_cli_cut_stream_drops_the_connection() -> None:
    proc, base = _start("--cut-stream-after", "2")
    try:
        _wait_healthy(base, proc)
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
                for chunk in r.iter_bytes():
                    received += chunk
        assert received.count(b"data: ") == 2 and b"[DONE]" not in received
        assert httpx.get(f"{base}/health").status_code == 200
    finally:
        _stop(proc)
