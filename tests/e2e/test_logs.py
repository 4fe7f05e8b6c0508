"""A real `tollway serve` process logs one JSON line per request on stderr."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.e2e.processes import API_KEY, emulator, free_port, pool, stop, wait_ok, write_config

pytestmark = pytest.mark.e2e

PROMPT = "a very private prompt 7f3a"


class Lines:
    """Collects a stream's lines on a thread; waits for one matching a test."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self._queue.put(raw.decode(errors="replace").rstrip("\n"))

    def rest(self, timeout_s: float = 10.0) -> list[str]:
        """Every line, once the stream has ended (the process stopped); in ``seen`` too."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the stream did not end"
        while not self._queue.empty():
            self.seen.append(self._queue.get_nowait())
        return self.seen

    def wait_for(self, wanted: Any, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such line in {self.seen[-20:]}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if wanted(line):
                return line


@contextmanager
def serving(
    tmp: Path, worker: str, env: dict[str, str], *flags: str
) -> Iterator[tuple[str, Lines]]:
    config = write_config(tmp, {"main": pool([worker])}, {"agent-small": {"route": "pool:main"}})
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)]
        + list(flags),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TOLLWAY_DATA_DIR": str(tmp / f"data-{port}"), **env},
    )
    assert proc.stderr is not None
    lines = Lines(proc.stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ok(url + "/healthz", proc)
        yield url, lines
    finally:
        stop(proc)
        lines.rest()
        proc.stderr.close()


def is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_every_line_is_json_and_each_request_has_one(tmp_path: Path) -> None:
    with (
        emulator("--instant") as (worker, _),
        serving(tmp_path, worker, {"TOLLWAY_LOG_FORMAT": "json"}) as (url, lines),
    ):
        started = lines.wait_for(lambda line: "Uvicorn running" in line or "startup" in line)
        reply = httpx.post(
            url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {API_KEY}", "x-request-id": "req-log-1"},
            json={"model": "agent-small", "messages": [{"role": "user", "content": PROMPT}]},
            timeout=10,
        )
        assert reply.status_code == 200
        line = lines.wait_for(lambda line: "req-log-1" in line)
    assert is_json(started) and json.loads(started)["logger"].startswith("uvicorn")
    entry = json.loads(line)
    assert entry["logger"] == "tollway.access" and entry["level"] == "info"
    assert entry["request_id"] == "req-log-1" and entry["tenant_id"] == "e2e"
    assert entry["key_id"] and entry["model"] == "agent-small"
    assert entry["route"].startswith("pool:main/") and entry["http_status"] == 200
    assert entry["prompt_tokens"] > 0 and entry["completion_tokens"] > 0
    assert entry["latency_ms"] > 0 and "cost_usd" in entry and entry["error_code"] is None
    assert PROMPT not in line and API_KEY not in line
    assert all(is_json(seen) for seen in lines.seen), lines.seen


def test_level_from_the_environment_and_text_format(tmp_path: Path) -> None:
    body = {"model": "agent-small", "messages": [{"role": "user", "content": "hi"}]}
    with emulator("--instant") as (worker, _):
        quiet = {"TOLLWAY_LOG_LEVEL": "warning", "TOLLWAY_LOG_FORMAT": "text"}
        with serving(tmp_path, worker, quiet) as (url, lines):
            headers = {"authorization": "Bearer tw-wrong", "x-request-id": "req-quiet"}
            assert httpx.post(url + "/v1/chat/completions", headers=headers, json=body).is_error
        # The process has stopped: every line it wrote is in.
        assert not any("req-quiet" in line for line in lines.seen)
        # The flag outranks the environment.
        with serving(tmp_path, worker, quiet, "--log-level", "info") as (url, lines):
            headers = {"authorization": "Bearer tw-wrong", "x-request-id": "req-text"}
            httpx.post(url + "/v1/chat/completions", headers=headers, json=body, timeout=10)
            line = lines.wait_for(lambda line: "req-text" in line)
    assert not is_json(line)
    assert " INFO tollway.access: " in line and "http_status=401" in line
    assert "tw-wrong" not in line
