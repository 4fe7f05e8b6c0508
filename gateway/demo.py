"""``tollway demo``: the whole system on one machine, as a tour.

Starts three emulated pools (two H100 workers of an 8B model, two H200 workers of
a 70B FP8 model, one L4 worker of an embedding model), creates a demo tenant and
a key with a daily budget in the demo's database, writes a configuration and a
price book (so every response shows what it cost), starts the gateway, and prints
the lines scripts read (``TOLLWAY_BASE_URL=…``, ``TOLLWAY_API_KEY=…``, ``TOLLWAY_ADMIN_TOKEN=…``).

An emulated worker that dies (kill one to watch the gateway fail over to its
pool's other worker) is restarted by :class:`gateway.supervisor.Supervisor`
and taken back into rotation by the gateway's health checks. Ctrl-C or
SIGTERM stops every child, then the demo prints what it metered.
"""

from __future__ import annotations

import asyncio
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
from gateway.supervisor import Child, Supervisor
from tollway.errors import TollwayError

#: The demo key's daily budget (USD): a refused request says it in USD.
DEMO_DAILY_BUDGET_USD = "5.00"

#: The demo's price book: what tenants are charged, per million tokens.
DEMO_PRICE_BOOK: dict[str, Any] = {
    "books": [
        {
            "name": "demo",
            "effective_from": "2025-01-01T00:00:00Z",
            "rates": [
                {"id": "default", "input_per_million": "0.50", "output_per_million": "1.50"},
                {
                    "id": "small",
                    "model": "agent-small",
                    "input_per_million": "0.20",
                    "cached_input_per_million": "0.05",
                    "output_per_million": "0.60",
                },
                {"id": "embed", "model": "embed-small", "input_per_million": "0.02"},
                {
                    "id": "large",
                    "model": "agent-large",
                    "input_per_million": "0.90",
                    "cached_input_per_million": "0.20",
                    "output_per_million": "2.70",
                    "per_request": "0.0001",
                },
            ],
        }
    ]
}


@dataclass(frozen=True)
class EmulatedPool:
    """One emulated pool of the demo."""

    name: str
    gpu: str
    model: str
    weights_dtype: str
    workers: int
    #: An embedding pool (SGLang's ``--is-embedding``; ``emulate --embedding``).
    embedding: bool = False


DEMO_POOLS = (
    EmulatedPool("h100-small", "h100", "llama-3.1-8b-instruct", "bf16", 2),
    EmulatedPool("h200-large", "h200", "llama-3.3-70b-instruct", "fp8", 2),
    EmulatedPool("l4-embed", "l4", "qwen3-embedding-0.6b", "bf16", 1, embedding=True),
)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
            tenant.id,
            KeyCreate.model_validate(
                {
                    "name": "demo",
                    "default_agent_type": "worker",
                    "budgets": {"daily_usd": DEMO_DAILY_BUDGET_USD},
                }
            ),
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


def demo_config(
    pool_ports: dict[str, list[int]], admin_token: str, pricing: Path | None = None
) -> dict[str, Any]:
    """The demo's configuration file as data (``pricing``: the price book's path)."""
    pools: dict[str, Any] = {}
    for pool in DEMO_POOLS:
        model = {"name": pool.model, "weights_dtype": pool.weights_dtype, "tp": 1}
        pools[pool.name] = {
            "gpu": pool.gpu,
            "model": {**model, "embedding": True} if pool.embedding else model,
            "workers": [f"http://127.0.0.1:{p}" for p in pool_ports[pool.name]],
            "health": {"interval_s": 1.0},
        }
    return {
        "admin_token": admin_token,
        **({"pricing": str(pricing)} if pricing is not None else {}),
        "pools": pools,
        "models": {
            "agent-small": {"route": "pool:h100-small"},
            "agent-large": {"route": "pool:h200-large"},
            "llama-3.1-8b-instruct": {"route": "pool:h100-small", "owned_by": "meta"},
            "llama-3.3-70b-instruct": {"route": "pool:h200-large", "owned_by": "meta"},
            "embed-small": {"route": "pool:l4-embed"},
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


def _banner(base_url: str, api_key: str, admin_token: str, data_dir: Path) -> str:
    return f"""TOLLWAY_BASE_URL={base_url}
TOLLWAY_API_KEY={api_key}
TOLLWAY_ADMIN_TOKEN={admin_token}
TOLLWAY_DATA_DIR={data_dir}

The demo's database and usage spool are in TOLLWAY_DATA_DIR: export it, and the
`tollway pricing`, `usage`, `tenants`, `keys` and `billing` commands use them.

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
  vectors = client.embeddings.create(model="embed-small", input=["a", "b"])
  print(len(vectors.data[0].embedding), vectors.usage)
  PY

Claude Code (npm @anthropic-ai/claude-code) against the gateway:

  ANTHROPIC_BASE_URL={base_url.removesuffix("/v1")} ANTHROPIC_API_KEY={api_key} \
  ANTHROPIC_MODEL=agent-small ANTHROPIC_SMALL_FAST_MODEL=agent-small \
  DISABLE_TELEMETRY=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 claude -p "Hello!"

Codex CLI (npm @openai/codex) against the gateway: in $CODEX_HOME/config.toml
(default ~/.codex/config.toml; more in docs/responses.md, "Codex")

  model = "agent-small"
  model_provider = "tollway"
  approval_policy = "never"
  sandbox_mode = "read-only"
  [model_providers.tollway]
  name = "Tollway"
  base_url = "{base_url}"
  env_key = "TOLLWAY_API_KEY"
  wire_api = "responses"

then

  TOLLWAY_API_KEY={api_key} codex exec --skip-git-repo-check "Hello!"

The key has a daily budget of {DEMO_DAILY_BUDGET_USD} USD; every answer carries its cost
(usage.cost, x-tollway-cost-usd) from the demo's price book. Kill an emulated
worker to watch the gateway fail over and the worker come back.

Press Ctrl-C to stop (the demo then prints what it metered)."""


def _worker_args(pool: EmulatedPool, port: int, speed: float) -> list[str]:
    args = [sys.executable, "-m", "simulator", "emulate", "--gpu", pool.gpu]
    args += ["--model", pool.model, "--port", str(port), "--speed", str(speed)]
    if pool.weights_dtype != "bf16":
        args += ["--weights-dtype", pool.weights_dtype]
    if pool.embedding:
        args.append("--embedding")
    return args


async def _metered(database_url: str) -> list[list[str]]:
    """What the ledger holds, by model: requests, tokens and cost (USD)."""
    from billing.database import create_engine
    from billing.queries import GroupBy, UsageFilter, usage_totals

    engine = create_engine(database_url)
    try:
        rows = await usage_totals(engine, UsageFilter(), GroupBy.MODEL)
    finally:
        await engine.dispose()
    return [
        [
            row.group or "-",
            str(row.requests),
            str(row.prompt_tokens),
            str(row.completion_tokens),
            row.cost_usd,
        ]
        for row in rows
    ]


def print_summary(database_url: str, restarts: int) -> None:
    """The closing summary: what the demo metered, and how often a worker came back."""
    from tollway.clitable import print_table

    try:
        rows = asyncio.run(_metered(database_url))
    except TollwayError as exc:  # the summary is a courtesy; never fail the exit over it
        print(f"(no summary: {exc.message})", flush=True)
        return
    print(f"\nMetered by the demo (workers restarted: {restarts}):", flush=True)
    if not rows:
        print("  nothing yet: send a request next time", flush=True)
        return
    columns = ["model", "requests", "prompt_tokens", "completion_tokens", "cost_usd"]
    print_table(columns, rows, whole={"model"}, right=columns[1:])


def run_demo(port: int, data_dir: Path, speed: float = 1.0) -> int:
    """Run the demo until interrupted; returns the process exit code."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    supervisor = Supervisor()
    stopping = False
    served = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    database_url = default_database_url(data_dir)
    try:
        pool_ports: dict[str, list[int]] = {}
        for pool in DEMO_POOLS:
            pool_ports[pool.name] = []
            for i in range(pool.workers):
                wport = free_port()
                pool_ports[pool.name].append(wport)
                name = f"{pool.name}-{i}"
                supervisor.start(
                    Child(
                        name, _worker_args(pool, wport, speed), logs / f"{name}.log", restart=True
                    )
                )
        for pool in DEMO_POOLS:
            for wport in pool_ports[pool.name]:
                url = f"http://127.0.0.1:{wport}/health"
                if not wait_http_ok(url, 60, supervisor.running()):
                    print(f"an emulated worker failed to start; see {logs}", file=sys.stderr)
                    return 1
        api_key = asyncio.run(_create_demo_tenant(database_url))
        admin_token = "tw-admin-" + secrets.token_urlsafe(24)
        pricing = data_dir / "pricing.yaml"
        pricing.write_text(yaml.safe_dump(DEMO_PRICE_BOOK))
        config_path = data_dir / "tollway.yaml"
        config_path.write_text(yaml.safe_dump(demo_config(pool_ports, admin_token, pricing)))
        os.chmod(config_path, 0o600)
        serve = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)]
        env = {
            "TOLLWAY_DATA_DIR": str(data_dir),
            # The demo's own token and database, whatever this shell has set.
            "TOLLWAY_ADMIN_TOKEN": admin_token,
            "DATABASE_URL": database_url,
        }
        supervisor.start(
            Child(
                "gateway",
                [*serve, "--port", str(port), "--log-level", "warning"],
                logs / "gateway.log",
                env=env,
            )
        )
        if not wait_http_ok(f"http://127.0.0.1:{port}/readyz", 60, supervisor.running()):
            print(f"the gateway failed to start; see {logs / 'gateway.log'}", file=sys.stderr)
            return 1
        served = True
        banner = _banner(f"http://127.0.0.1:{port}/v1", api_key, admin_token, data_dir.resolve())
        print(banner, flush=True)
        while not stopping:
            ended = supervisor.check()
            if ended is not None:
                print(f"{ended.name} exited; see {logs}", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        supervisor.stop_all()  # the gateway drains and flushes its usage to the ledger
        if served:
            print_summary(database_url, sum(c.restarts for c in supervisor.children))
