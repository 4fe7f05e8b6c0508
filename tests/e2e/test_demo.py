"""`tollway demo`: prints its lines, serves with the demo key, and stops every child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from tests.e2e.processes import free_port

pytestmark = pytest.mark.e2e


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def test_demo_runs_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "demo",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "demo"),
            "--speed",
            "50",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while "TOLLWAY_ADMIN_TOKEN" not in lines:
            assert time.monotonic() < deadline, "the demo did not print its lines"
            line = proc.stdout.readline()
            assert line, f"the demo exited early ({proc.poll()})"
            if line.startswith("TOLLWAY_"):
                name, _, value = line.strip().partition("=")
                lines[name] = value
        assert lines["TOLLWAY_BASE_URL"] == f"http://127.0.0.1:{port}/v1"
        client = openai.OpenAI(
            base_url=lines["TOLLWAY_BASE_URL"], api_key=lines["TOLLWAY_API_KEY"], max_retries=0
        )
        assert {m.id for m in client.models.list()} >= {"agent-small", "agent-large"}
        reply = client.chat.completions.with_raw_response.create(
            model="agent-small",
            messages=[{"role": "user", "content": "Hello!"}],
            max_tokens=8,
            extra_headers={"x-agent-type": "coordinator"},
        )
        assert reply.parse().choices[0].message.content
        assert reply.headers["x-tollway-route"].startswith("pool:h100-small/")
        vectors = client.embeddings.create(model="embed-small", input=["a", "b"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 1024
        children = children_of(proc.pid)
        assert len(children) == 6  # five emulated workers and the gateway
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    assert proc.returncode == 0
    time.sleep(0.5)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    for pid in alive:  # pragma: no cover - only on failure
        os.kill(pid, signal.SIGKILL)
    assert alive == []
