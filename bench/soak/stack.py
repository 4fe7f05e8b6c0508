"""The full production stack on loopback: workers, Redis, PostgreSQL, the gateway.

Every feature is on, as a production deployment runs it: API keys hashed in the
tenancy database (a fresh PostgreSQL database per run, created here and dropped
afterwards), rate limits, budgets, sessions and idempotency in Redis (``REDIS_URL``;
every key under a prefix unique to the run, deleted afterwards), metering through
the Redis usage stream into the ledger (the gateway's inline writer), a price book,
cache-aware routing across two or more workers, and context compression for one of
the two agent types.

Workers are the canned SGLang-shaped upstream (``bench.upstream``, fast enough that
the gateway is the bottleneck) or the SGLang emulator (``python -m simulator
emulate --instant``: no simulated GPU delay, but it tokenizes every prompt in Python,
so it costs more CPU per request than the gateway on prompts of a few KB).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from bench.gateway_overhead import merge
from bench.processes import Children, free_port, python
from bench.procfs import child_pids, cmdline

UpstreamKind = Literal["canned", "emulator"]
POOL_MODEL = "llama-3.1-8b-instruct"
PUBLIC_MODEL = "agent"
AGENT_TYPES = ("coordinator", "worker")
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
#: Per request: 1,000 input tokens at 0.10 USD/M plus 16 output tokens at 0.40 USD/M.
PRICES = """\
books:
  - name: bench
    effective_from: 2020-01-01T00:00:00Z
    rates:
      - {id: flat, input_per_million: "0.10", output_per_million: "0.40", per_request: "0"}
"""
#: Limits and budgets far above what one machine can push, so every request is
#: checked and charged against them and none is refused.
GENEROUS_LIMITS = {"rpm": 10_000_000, "tpm": 10_000_000_000, "max_concurrent": 100_000}
GENEROUS_BUDGETS = {"daily_usd": "1000000", "monthly_usd": "10000000"}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def gateway_config(
    workers: Sequence[str],
    admin_token: str,
    prefix: str,
    pricing_path: str,
    idempotency_ttl_s: float = 600.0,
) -> dict[str, Any]:
    """The gateway's YAML config (as a mapping): one cache-aware pool, two agent types."""
    return {
        "admin_token": admin_token,
        "server": {"access_log": False},
        "pools": {
            "h100": {
                "gpu": "h100",
                "model": {"name": POOL_MODEL},
                "workers": list(workers),
                "policy": "cache_aware",
                "gpu_hour_usd": "2.50",
            }
        },
        "models": {PUBLIC_MODEL: {"route": "pool:h100"}},
        "agent_types": {
            "coordinator": {"model": PUBLIC_MODEL, "priority": 10},
            "worker": {"model": PUBLIC_MODEL, "compression": "agentic"},
        },
        "routing": {"default_agent_type": "coordinator"},
        "compression": {"agentic": {"mask_tool_results_after": 3, "budget_tokens": 24000}},
        "limits": {"key_prefix": prefix},
        "idempotency": {"key_prefix": prefix, "ttl_s": idempotency_ttl_s},
        "pricing": pricing_path,
    }


def _admin(base: str, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}/admin/v1{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with _OPENER.open(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"admin {path} answered {exc.code}: {exc.read()[:300]!r}") from exc


def create_key(
    base: str,
    admin_token: str,
    tenant_limits: dict[str, Any] | None = None,
    key_limits: dict[str, Any] | None = None,
    budgets: dict[str, Any] | None = None,
    name: str = "bench",
) -> str:
    """A new tenant and API key through the admin API (stored hashed); the key's secret."""
    tenant = _admin(
        base,
        admin_token,
        "/tenants",
        {"name": name, "limits": tenant_limits or {}, "budgets": budgets or {}},
    )
    key = _admin(base, admin_token, f"/tenants/{tenant['id']}/keys", {"limits": key_limits or {}})
    return str(key["key"])


def sqlalchemy_url(dsn: str) -> str:
    """The asyncpg SQLAlchemy URL of a ``postgresql://`` DSN."""
    if dsn.startswith("postgresql+asyncpg://"):
        return dsn
    if not dsn.startswith("postgresql://"):
        raise ValueError(f"not a postgresql:// URL: {dsn!r}")
    return "postgresql+asyncpg://" + dsn[len("postgresql://") :]


def database_dsn(admin_dsn: str, name: str) -> str:
    """``admin_dsn`` pointed at database ``name``."""
    base = admin_dsn.split("?", 1)[0].rsplit("/", 1)[0]
    return f"{base}/{name}"


async def _pg(dsn: str, sql: str) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def ledger_rows(dsn: str) -> int:
    """Rows in the usage ledger of the database at ``dsn``."""
    return int(asyncio.run(_pg(dsn, "SELECT count(*) FROM usage_ledger")))


def delete_redis_prefix(url: str, prefix: str) -> int:
    """Delete every Redis key under ``prefix`` (the run's own); the count deleted."""
    import redis

    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(client.unlink(*batch))
    finally:
        client.close()
    return deleted


@dataclass
class StackOptions:
    """The shared part: workers, stores, logging."""

    upstreams: int = 2
    upstream_kind: UpstreamKind = "canned"
    upstream_cpu: int | None = 1
    log_level: str = "warning"
    redis_url: str = DEFAULT_REDIS
    postgres_dsn: str = DEFAULT_POSTGRES
    #: SQLAlchemy's asyncpg prepared-statement cache per connection (None: its default);
    #: a diagnostic knob, passed as a query parameter of the gateway's DATABASE_URL.
    statement_cache: int | None = None
    #: Argv prefix that replaces ``python -m gateway`` (a memory-tracing wrapper).
    gateway_launcher: list[str] | None = None


@dataclass
class Gateway:
    """One gateway replica: its base URL, its process, and the pids that serve requests
    (the process itself, or its worker processes under ``serve --workers N``)."""

    url: str
    proc: subprocess.Popen[bytes]
    serving_pids: list[int]

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def all_pids(self) -> list[int]:
        """Every process of the replica (a supervisor and its workers)."""
        return sorted({self.proc.pid, *self.serving_pids})


@dataclass
class Deployment:
    """Gateway replicas sharing one config (one Redis key prefix): one logical gateway."""

    name: str
    prefix: str
    replicas: list[Gateway]

    @property
    def ports(self) -> list[int]:
        """One port per replica."""
        return [g.port for g in self.replicas]

    @property
    def serving_pids(self) -> list[int]:
        """Every process that serves requests."""
        return [pid for g in self.replicas for pid in g.serving_pids]

    @property
    def all_pids(self) -> list[int]:
        """Every process of every replica."""
        return [pid for g in self.replicas for pid in g.all_pids]


class Stack:
    """Workers and a fresh database, then gateway deployments on demand.

    ``close()`` stops the gateways, drops the database and deletes every Redis key
    the deployments used (the other processes stop with ``children``).
    """

    def __init__(self, children: Children, options: StackOptions) -> None:
        self.children = children
        self.options = options
        self.run_id = uuid.uuid4().hex[:10]
        self.admin_token = "tw-admin-" + secrets.token_hex(16)
        self.database = f"tollway_bench_{self.run_id}"
        self.database_dsn = database_dsn(options.postgres_dsn, self.database)
        self.workers: list[str] = []
        self.upstream_pids: list[int] = []
        self.deployments: list[Deployment] = []
        self._created_db = False
        self._started = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers and create the database."""
        self.workers = self._start_workers()
        asyncio.run(_pg(self.options.postgres_dsn, f'CREATE DATABASE "{self.database}"'))
        self._created_db = True

    def deploy(
        self,
        name: str,
        workers: int = 1,
        replicas: int = 1,
        cpu: int | None = None,
        overlay: dict[str, Any] | None = None,
    ) -> Deployment:
        """Start ``replicas`` gateways of ``workers`` processes each, with a config of
        their own (own Redis prefix: own limits, own ledger-writer leader); all share
        the workers, Redis and the database."""
        prefix = f"bench-{self.run_id}-{len(self.deployments)}:"
        config = self._write_config(name, prefix, overlay or {})
        deployment = Deployment(name, prefix, [])
        self.deployments.append(deployment)
        for _ in range(replicas):
            deployment.replicas.append(self._start_gateway(config, workers, cpu))
        return deployment

    def close(self) -> None:
        """Stop the gateways, drop the database, delete the Redis keys."""
        for deployment in self.deployments:
            for gateway in deployment.replicas:
                # Stopped before the database is dropped: a draining gateway flushes to it.
                self.children.stop(gateway.proc, grace=30.0)
        if self._created_db:
            drop = f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'
            asyncio.run(_pg(self.options.postgres_dsn, drop))
            self._created_db = False
        for deployment in self.deployments:
            delete_redis_prefix(self.options.redis_url, deployment.prefix)
        self.deployments.clear()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- parts -------------------------------------------------------------------------

    def _start_workers(self) -> list[str]:
        urls, procs = [], []
        for index in range(self.options.upstreams):
            port = free_port()
            name = f"upstream-{index}"
            if self.options.upstream_kind == "canned":
                argv = [python(), "-m", "bench.upstream", "--port", str(port)]
            else:
                argv = [
                    python(),
                    "-m",
                    "simulator",
                    "emulate",
                    "--instant",
                    "--gpu",
                    "h100",
                    "--model",
                    POOL_MODEL,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--seed",
                    str(index),
                ]
            procs.append((name, self.children.start(name, argv, cpu=self.options.upstream_cpu)))
            urls.append(f"http://127.0.0.1:{port}")
        for (name, proc), url in zip(procs, urls, strict=True):
            self.children.wait_ready(name, url + "/health", proc=proc)
        self.upstream_pids = [proc.pid for _, proc in procs]
        return urls

    def _write_config(self, name: str, prefix: str, overlay: dict[str, Any]) -> Path:
        pricing = self.children.log_dir / "pricing.yaml"
        pricing.write_text(PRICES)
        base = gateway_config(self.workers, self.admin_token, prefix, str(pricing))
        path = self.children.log_dir / f"tollway-{name}.yaml"
        path.write_text(yaml.safe_dump(merge(base, overlay)))
        return path

    def _start_gateway(self, config: Path, workers: int, cpu: int | None) -> Gateway:
        index = self._started
        self._started += 1
        port = free_port()
        launcher = self.options.gateway_launcher or [python(), "-m", "gateway"]
        argv = [
            *launcher,
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            self.options.log_level,
        ]
        env = {
            "TOLLWAY_CONFIG": str(config),
            "TOLLWAY_DATA_DIR": str(self.children.log_dir / f"data-{index}"),
            "DATABASE_URL": self.gateway_database_url,
            "REDIS_URL": self.options.redis_url,
        }
        name = f"gateway-{index}"
        proc = self.children.start(name, argv, cpu=cpu, env=env)
        url = f"http://127.0.0.1:{port}"
        self.children.wait_ready(name, url + "/readyz", timeout=90, proc=proc)
        serving = [proc.pid]
        if workers > 1:
            serving = [
                pid
                for pid in child_pids(proc.pid)
                if "multiprocessing" in cmdline(pid) and "resource_tracker" not in cmdline(pid)
            ]
            if len(serving) != workers:
                raise RuntimeError(
                    f"expected {workers} worker processes under {proc.pid}, found {serving}"
                )
        return Gateway(url, proc, serving)

    @property
    def gateway_database_url(self) -> str:
        """The gateway's ``DATABASE_URL``."""
        url = sqlalchemy_url(self.database_dsn)
        if self.options.statement_cache is not None:
            url += f"?prepared_statement_cache_size={self.options.statement_cache}"
        return url

    def new_key(
        self,
        tenant_limits: dict[str, Any] | None = None,
        key_limits: dict[str, Any] | None = None,
        budgets: dict[str, Any] | None = None,
        name: str = "bench",
    ) -> str:
        """A new tenant and key (stored hashed in the shared database) via an admin API."""
        url = self.deployments[0].replicas[0].url
        return create_key(url, self.admin_token, tenant_limits, key_limits, budgets, name)

    def ledger_rows(self) -> int:
        """Rows in this run's usage ledger."""
        return ledger_rows(self.database_dsn)
