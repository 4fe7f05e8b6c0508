"""Real processes on loopback for end-to-end tests: emulated workers and gateways."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.auth import hash_key

API_KEY = "tw-e2e-key-0123456789abcdefghijklmnopqrstuvwxyz"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ok(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Wait until ``url`` answers 200; fail early when the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode}:\n{out[-3000:]}")
        try:
            # SGLang's /health (and the emulator's) answers after about 1 s.
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not become ready in {timeout_s}s")


def metric_samples(base_url: str, name: str) -> list[float]:
    """Every sample of ``name`` on a process's ``/metrics`` (any labels)."""
    text = httpx.get(f"{base_url}/metrics", timeout=2).text
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    ]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


@contextmanager
def emulator(
    *flags: str, model: str = "llama-3.1-8b-instruct"
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An emulated SGLang worker process; yields its base URL and process."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "simulator",
        "emulate",
        "--gpu",
        "h100",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *flags,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ok(url + "/health", proc)
        yield url, proc
    finally:
        stop(proc)


def pool(workers: list[str], model: str = "llama-3.1-8b-instruct") -> dict[str, Any]:
    return {
        "gpu": "h100",
        "model": {"name": model},
        "workers": workers,
        "health": {"interval_s": 0.25, "timeout_s": 3.0, "unhealthy_threshold": 1},
        "timeouts": {"connect_s": 1, "first_byte_s": 20, "total_s": 60},
    }


def write_config(tmp: Path, pools: dict[str, Any], models: dict[str, Any], **extra: Any) -> Path:
    """A gateway config file with the e2e static key."""
    config = {
        "auth": {"keys": [{"tenant": "e2e", "name": "e2e", "key_sha256": hash_key(API_KEY)}]},
        "pools": pools,
        "models": models,
        **extra,
    }
    path = tmp / f"tollway-{free_port()}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_gateway(
    config: Path, env: dict[str, str] | None = None, port: int | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start ``tollway serve`` and wait until it is live; returns its URL and process."""
    port = port or free_port()
    args = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ok(url + "/healthz", proc)
    except BaseException:
        stop(proc)
        raise
    return url, proc


@contextmanager
def gateway(
    tmp: Path,
    pools: dict[str, Any],
    models: dict[str, Any],
    env: dict[str, str] | None = None,
    **extra: Any,
) -> Iterator[str]:
    """A ``tollway serve`` process; yields its base URL (``http://127.0.0.1:P``)."""
    data = tmp / f"data-{free_port()}"
    url, proc = start_gateway(
        write_config(tmp, pools, models, **extra), {"TOLLWAY_DATA_DIR": str(data), **(env or {})}
    )
    try:
        yield url
    finally:
        stop(proc)
