"""Tollway with every feature on, as the documentation's production topology runs it.

- **Authentication**: a tenant and an API key made through the admin API, so the key
  lives hashed in the tenancy database (SQLite under a fresh ``TOLLWAY_DATA_DIR``).
- **Rate limits and budget in Redis** (``REDIS_URL``): the key has rpm, tpm,
  max_concurrent limits and a daily budget, evaluated on every request but far too
  high ever to refuse one.
- **Metering into the ledger**: a price book prices every request; usage records go to
  the Redis usage stream and ``python -m gateway billing worker`` (the ledger writer)
  moves them into the SQL ledger. By default (``--tollway-metering production``) each
  record is written to the local usage journal before the response finishes and
  appended to the stream right after (``metering.journal: true``: a killed gateway
  loses no billed request, and the response waits for no Redis round trip), and the
  writer runs outside the serving process (``metering.writer: external``); ``default`` keeps the
  configuration defaults (``true`` and ``inline``) and starts no separate writer.
- **Cache-aware routing**: the pool's policy is ``cache_aware`` (the default, set
  explicitly here so the report can say so), with KV admission as configured by default.

The gateway is started exactly as ``bench.gateway_overhead`` starts it
(``python -m gateway serve``, one uvicorn worker) on the system-under-test core.

Redis keys keep the default prefix (``limits.key_prefix: "tollway:"``): the usage
stream's key follows that prefix, while ``tollway billing worker`` has no option for it
and always reads ``tollway:{usage}:stream``, so with any other prefix the writer would
drain nothing. Use a Redis (or logical database) that no other gateway uses.
"""

from __future__ import annotations

import secrets
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from bench.gateway_admin import create_key, start_redis
from bench.gateway_overhead import gateway_argv, gateway_config, merge
from bench.peers.systems import ROOT, SIDE_CPU, SUT_CPU, System, check_answers
from bench.pipeline_variants import HIGH_LIMITS, PRICE_BOOK
from bench.processes import Children, free_port, python

MeteringMode = Literal["production", "default"]


@dataclass(frozen=True)
class TollwayStack:
    """A running Tollway: the gateway as a ``System`` plus where its state lives."""

    system: System
    data_dir: Path
    writer_pid: int | None
    settings: dict[str, Any]


def metering_settings(mode: MeteringMode) -> dict[str, Any]:
    """The ``metering:`` section for a mode."""
    if mode == "production":
        return {"journal": True, "durable_before_response": False, "writer": "external"}
    return {"durable_before_response": True, "writer": "inline"}


def tollway_config(
    upstream_port: int, admin_token: str, pricing: Path, mode: MeteringMode
) -> dict[str, Any]:
    """The generated configuration: bench.gateway_overhead's, every feature switched on."""
    overlay: dict[str, Any] = {
        "admin_token": admin_token,
        "auth": {"mode": "keys", "keys": []},  # keys come from the tenancy database only
        "pools": {"bench": {"policy": "cache_aware"}},
        "metering": metering_settings(mode),
        "pricing": str(pricing),
    }
    return merge(gateway_config(upstream_port, "unused-" + secrets.token_hex(8)), overlay)


def redis_for_tollway(children: Children, url: str | None) -> tuple[str, str]:
    """The Redis URL Tollway gets and a description of it: ``url``, else a private server."""
    if url:
        return url, f"the Redis at `{url}`"
    return start_redis(children), f"a private `redis-server` on core {SIDE_CPU}, no persistence"


def start_tollway(
    children: Children,
    upstream_port: int,
    redis_url: str,
    writer_cpu: int,
    mode: MeteringMode = "production",
    log_level: str = "warning",
    redis_note: str = "",
) -> TollwayStack:
    """Start the gateway (and, in production mode, its ledger writer); make the key."""
    data_dir = children.log_dir / "tollway-data"
    pricing = children.log_dir / "pricing.yaml"
    pricing.write_text(yaml.safe_dump(PRICE_BOOK))
    admin_token = "bench-admin-" + secrets.token_hex(16)
    config = tollway_config(upstream_port, admin_token, pricing, mode)
    config_path = children.log_dir / "tollway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {
        "TOLLWAY_CONFIG": str(config_path),
        "TOLLWAY_DATA_DIR": str(data_dir),
        "REDIS_URL": redis_url,
    }
    port = free_port()
    proc = children.start(
        "tollway", gateway_argv("cli", config_path, port, log_level), cpu=SUT_CPU, env=env, cwd=ROOT
    )
    children.wait_ready("tollway", f"http://127.0.0.1:{port}/readyz", timeout=90, proc=proc)

    writer_pid = None
    if config["metering"]["writer"] == "external":
        writer = children.start(
            "tollway-writer",
            [python(), "-m", "gateway", "billing", "worker"],
            cpu=writer_cpu,
            env=env,
            cwd=ROOT,
        )
        writer_pid = writer.pid

    secret = create_key(port, admin_token, "bench-peers", HIGH_LIMITS)
    settings = {
        "metering": config["metering"],
        "ledger writer": (
            f"`python -m gateway billing worker` on core {writer_cpu}"
            if writer_pid is not None
            else "inside the gateway"
        ),
        "key limits": HIGH_LIMITS,
        "pool policy": config["pools"]["bench"]["policy"],
        "REDIS_URL": redis_note or redis_url,
    }
    system = System(
        "tollway",
        "Tollway",
        port,
        proc.pid,
        authorization=f"Bearer {secret}",
        include_usage=False,
        settings=describe_settings(settings, writer_pid is not None),
        helper_pids=(writer_pid,) if writer_pid is not None else (),
    )
    try:
        check_answers(system)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{children.log_tail('tollway', 30)}") from None
    print(f"tollway ready on port {port}: {system.settings}", file=sys.stderr, flush=True)
    return TollwayStack(system, data_dir, writer_pid, settings)


def describe_settings(settings: dict[str, Any], external_writer: bool) -> str:
    """The Tollway settings, in words, for the report."""
    metering = settings["metering"]
    durable = str(metering["durable_before_response"]).lower()
    journal = str(metering.get("journal", False)).lower()
    writer = settings["ledger writer"]
    limits = settings["key limits"]["limits"]
    budget = settings["key limits"]["budgets"]["daily_usd"]
    return (
        "`python -m gateway serve` (one uvicorn worker, uvloop, httptools); "
        f"`metering: {{journal: {journal}, durable_before_response: {durable}, "
        f"writer: {metering['writer']}}}`, ledger writer {writer}"
        f"{' (measured apart)' if external_writer else ''}, SQLite ledger and tenancy "
        "database under a fresh data directory; key made through the admin API (stored as its "
        f"SHA-256) with rpm {limits['rpm']:,}, tpm {limits['tpm']:,}, max_concurrent "
        f"{limits['max_concurrent']:,} and a daily budget of ${budget} (Redis-backed, evaluated on "
        f"every request, never refusing); price book on; pool policy `{settings['pool policy']}`; "
        f"`REDIS_URL`: {settings['REDIS_URL']}"
    )


def ledger_rows(data_dir: Path) -> int:
    """Rows in the SQLite usage ledger (0 when it does not exist yet)."""
    path = data_dir / "tollway.db"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        row = db.execute("SELECT COUNT(*) FROM usage_ledger").fetchone()
    return int(row[0]) if row else 0
