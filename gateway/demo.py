"""``tollway demo``: the whole system on one machine, in one process tree.

Starts two emulated pools (two H100 workers of an 8B model, two H200 workers of
a 70B FP8 model), creates a demo tenant and key in the demo's database, writes
a configuration, starts the gateway, and prints the lines scripts read
(``TOLLWAY_BASE_URL=…``, ``TOLLWAY_API_KEY=…``, ``TOLLWAY_ADMIN_TOKEN=…``).
Ctrl-C or SIGTERM stops every child.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from gateway.database import default_database_url

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class EmulatedPool:
    """One emulated pool of the demo."""

    name: str
    gpu: str
    model: str
    weights_dtype: str
    workers: int


DEMO_POOLS = (
    EmulatedPool("h100-small", "h100", "llama-3.1-8b-instruct", "bf16", 2),
    EmulatedPool("h200-large", "h200", "llama-3.3-70b-instruct", "fp8", 2),
)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM this child when the demo process dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def spawn(
    args: list[str], log_file: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child process whose output goes to ``log_file``."""
    out = log_file.open("ab")
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(
        args,
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec,
        env={**os.environ, **(env or {})},
    )


async def _create_demo_tenant(database_url: str) -> str:
    """Create the demo tenant and a key for it; returns the key's secret."""
    from gateway.tenancy.client import DatabaseClient
    from gateway.tenancy.schemas import KeyCreate, Limits, TenantCreate

    client = await DatabaseClient.open(database_url)
    try:
        tenant = await client.create_tenant(
            TenantCreate(name="demo", limits=Limits(rpm=600, max_concurrent=64))
        )
        key = await client.create_key(
            tenant.id, KeyCreate(name="demo", default_agent_type="worker")
        )
        return key.key
    finally:
        await client.close()


def wait_http_ok(url: str, timeout_s: float, procs: list[subprocess.Popen[bytes]]) -> bool:
    """Poll ``url`` until it answers 200, a child exits, or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            # An emulated worker's /health answers after SGLang's 1 s wait.
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


def demo_config(pool_ports: dict[str, list[int]], admin_token: str) -> dict[str, Any]:
    """The demo's configuration file as data."""
    pools: dict[str, Any] = {}
    for pool in DEMO_POOLS:
        pools[pool.name] = {
            "gpu": pool.gpu,
            "model": {"name": pool.model, "weights_dtype": pool.weights_dtype, "tp": 1},
            "workers": [f"http://127.0.0.1:{p}" for p in pool_ports[pool.name]],
            "health": {"interval_s": 1.0},
        }
    return {
        "admin_token": admin_token,
        "pools": pools,
        "models": {
            "agent-small": {"route": "pool:h100-small"},
            "agent-large": {"route": "pool:h200-large"},
            "llama-3.1-8b-instruct": {"route": "pool:h100-small", "owned_by": "meta"},
            "llama-3.3-70b-instruct": {"route": "pool:h200-large", "owned_by": "meta"},
        },
        "agent_types": {
            "coordinator": {"model": "agent-small", "priority": 10},
            "worker": {"model": "agent-large", "compression": "agentic"},
            "summarizer": {"model": "agent-small", "max_tokens": 1024},
        },
        "compression": {
            # Observation masking in steps, so the cached prefix stays put between turns.
            "agentic": {
                "trigger_tokens": 8000,
                "steps": [
                    {"type": "truncate_tool_outputs", "max_tokens": 4000},
                    {"type": "mask_observations", "keep": 3, "step": 4},
                ],
            }
        },
    }


def _banner(base_url: str, api_key: str, admin_token: str) -> str:
    return f"""TOLLWAY_BASE_URL={base_url}
TOLLWAY_API_KEY={api_key}
TOLLWAY_ADMIN_TOKEN={admin_token}

Try it:

  curl -s {base_url}/chat/completions \\
    -H "Authorization: Bearer {api_key}" -H "Content-Type: application/json" \\
    -d '{{"model": "agent-small", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  python - <<'PY'
  from openai import OpenAI
  client = OpenAI(base_url="{base_url}", api_key="{api_key}")
  reply = client.chat.completions.create(
      model="agent-large", messages=[{{"role": "user", "content": "Plan a trip."}}])
  print(reply.choices[0].message.content, reply.usage)
  PY

Press Ctrl-C to stop."""


def run_demo(port: int, data_dir: Path, speed: float = 1.0) -> int:
    """Run the demo until interrupted; returns the process exit code."""
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        pool_ports: dict[str, list[int]] = {}
        for pool in DEMO_POOLS:
            pool_ports[pool.name] = []
            for i in range(pool.workers):
                wport = free_port()
                pool_ports[pool.name].append(wport)
                args = [
                    sys.executable,
                    "-m",
                    "simulator",
                    "emulate",
                    "--gpu",
                    pool.gpu,
                    "--model",
                    pool.model,
                    "--port",
                    str(wport),
                    "--speed",
                    str(speed),
                ]
                if pool.weights_dtype != "bf16":
                    args += ["--weights-dtype", pool.weights_dtype]
                procs.append(spawn(args, logs / f"{pool.name}-{i}.log"))
        for pool in DEMO_POOLS:
            for wport in pool_ports[pool.name]:
                if not wait_http_ok(f"http://127.0.0.1:{wport}/health", 60, procs):
                    print(f"an emulated worker failed to start; see {logs}", file=sys.stderr)
                    return 1
        api_key = asyncio.run(_create_demo_tenant(default_database_url(data_dir)))
        admin_token = "tw-admin-" + secrets.token_urlsafe(24)
        config_path = data_dir / "tollway.yaml"
        config_path.write_text(yaml.safe_dump(demo_config(pool_ports, admin_token)))
        os.chmod(config_path, 0o600)
        serve = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)]
        procs.append(
            spawn(
                [*serve, "--port", str(port), "--log-level", "warning"],
                logs / "gateway.log",
                env={"TOLLWAY_DATA_DIR": str(data_dir.resolve())},
            )
        )
        if not wait_http_ok(f"http://127.0.0.1:{port}/readyz", 60, procs):
            print(f"the gateway failed to start; see {logs / 'gateway.log'}", file=sys.stderr)
            return 1
        print(_banner(f"http://127.0.0.1:{port}/v1", api_key, admin_token), flush=True)
        while not stopping:
            if any(p.poll() is not None for p in procs):
                print(f"a demo process exited; see {logs}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
