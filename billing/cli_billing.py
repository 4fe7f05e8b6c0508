"""``tollway billing export|reconcile|worker``: Stripe and the ledger writer."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.cli import JsonOption, fail, parse_time, print_json, run, stores
from billing.customers import customers_from_tenants, merge_customers
from billing.ledger import Ledger
from billing.meters import StripeSettings
from billing.reconcile import reconcile
from billing.spool import Spool
from billing.stripe_export import StripeExporter, connect_stripe
from billing.writer import LedgerWriter, WriterSettings
from tollway.clitable import print_table

billing_app = typer.Typer(
    help="Stripe export, reconciliation, the ledger writer.", no_args_is_help=True
)

#: The gateways' default ``limits.key_prefix``: usage stream and leader lock keys start with it.
DEFAULT_KEY_PREFIX = "tollway:"

StripeOption = Annotated[
    Path,
    typer.Option("--stripe", help="YAML with the Stripe settings (a `stripe:` mapping or bare)."),
]
CustomersOption = Annotated[
    Path | None,
    typer.Option(
        "--customers",
        help="YAML/JSON mapping of tenant id to Stripe customer id, merged into the tenants' "
        "stored customers (export stores the new ones; an entry that contradicts a stored "
        "customer is refused).",
    ),
]


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise fail(f"{path}: {exc}") from None


def _settings(path: Path) -> StripeSettings:
    data = _yaml(path)
    if isinstance(data, dict) and "stripe" in data:
        data = data["stripe"]
    try:
        return StripeSettings.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise fail(f"{path}:{where}: {error['msg']}") from None


async def _mapping(path: Path | None, engine: AsyncEngine, *, store: bool) -> dict[str, str]:
    """The tenants' customers, with a ``--customers`` file merged in (stored by export)."""
    if path is None:
        return await customers_from_tenants(engine)
    return await merge_customers(engine, _customers(path), store=store)


def _customers(path: Path) -> dict[str, str]:
    data = _yaml(path)
    if not isinstance(data, dict):
        raise fail(f"{path}: expected a mapping of tenant id to Stripe customer id")
    return {str(k): str(v) for k, v in data.items()}


@billing_app.command("export")
def export(
    stripe: StripeOption, customers: CustomersOption = None, as_json: JsonOption = False
) -> None:
    """Send closed usage buckets to Stripe meters (idempotent; safe to re-run)."""
    settings = _settings(stripe)

    async def work(engine: AsyncEngine) -> dict[str, Any]:
        mapping = await _mapping(customers, engine, store=True)
        connection = connect_stripe(settings)
        try:
            report = await StripeExporter(engine, connection.client, settings, mapping).export()
        finally:
            await connection.aclose()
        return report.to_dict()

    result = run(work)
    if as_json:
        print_json(result)
        return
    table = Table(title="Stripe export")
    table.add_column("")
    table.add_column("value", justify="right")
    for name, value in result.items():
        table.add_row(name, ", ".join(value) if isinstance(value, list) else str(value))
    Console().print(table)
    if result["failed"] or result["review"]:
        raise typer.Exit(code=1)


@billing_app.command("reconcile")
def reconcile_command(
    stripe: StripeOption,
    start: Annotated[str, typer.Option("--from", help="Period start (whole hour/day, UTC).")],
    end: Annotated[str, typer.Option("--to", help="Period end, exclusive.")],
    customers: CustomersOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ledger totals against sent batches and Stripe's event summaries; exit 1 on mismatch."""
    settings = _settings(stripe)
    period_start, period_end = parse_time(start, "from"), parse_time(end, "to")
    assert period_start is not None and period_end is not None

    async def work(engine: AsyncEngine) -> list[dict[str, Any]]:
        mapping = await _mapping(customers, engine, store=False)
        connection = connect_stripe(settings)
        try:
            rows = await reconcile(
                engine, connection.client, settings, mapping, period_start, period_end
            )
        finally:
            await connection.aclose()
        return [row.to_dict() for row in rows]

    rows = run(work)
    if as_json:
        print_json({"rows": rows, "matches": all(r["matches"] for r in rows)})
    else:
        columns = ["customer_id", "meter", "ledger_value", "exported_value", "stripe_value", "ok"]
        cells = [
            [
                row["customer_id"],
                row["meter"],
                str(row["ledger_value"]),
                str(row["exported_value"]),
                "-" if row["stripe_value"] is None else str(row["stripe_value"]),
                "yes" if row["matches"] else "NO",
            ]
            for row in rows
        ]
        print_table(
            columns, cells, whole={"customer_id", "meter"}, title=f"reconcile {start} .. {end}"
        )
    if not all(r["matches"] for r in rows):
        raise typer.Exit(code=1)


def _key_prefix_of(config: Path | None) -> str:
    """``limits.key_prefix`` of a gateway configuration file (``tollway:`` by default)."""
    if config is None:
        return DEFAULT_KEY_PREFIX
    try:
        document = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise fail(f"cannot read {config}: {exc}") from exc
    limits = document.get("limits") if isinstance(document, dict) else None
    prefix = limits.get("key_prefix") if isinstance(limits, dict) else None
    if prefix is None:
        return DEFAULT_KEY_PREFIX
    if not isinstance(prefix, str) or not prefix:
        raise fail(f"{config}: limits.key_prefix must be a non-empty string")
    return prefix


@billing_app.command("worker")
def worker(
    spool_dir: Annotated[
        Path | None, typer.Option(help="Local spool directory (default: <data dir>/spool).")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    linger_ms: Annotated[
        int,
        typer.Option(
            min=0,
            max=10_000,
            help="Wait this long after a round that moved records, so the next round "
            "writes a batch (one SQL transaction) rather than one record per commit.",
        ),
    ] = 100,
    key_prefix: Annotated[
        str | None,
        typer.Option(
            help="Prefix of the Redis keys: the gateways' `limits.key_prefix` "
            "(default: read from --config, else `tollway:`)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="The gateways' configuration file, for `limits.key_prefix`."),
    ] = None,
    claim_idle_ms: Annotated[
        int,
        typer.Option(
            min=100,
            help="Take over stream entries a dead writer read and never wrote after this "
            "long (the gateways' `metering.claim_idle_ms`).",
        ),
    ] = 30_000,
    as_json: JsonOption = False,
) -> None:
    """Move buffered usage (Redis stream at REDIS_URL, local spool) into the ledger."""
    settings = stores()
    directory = spool_dir or settings.data_dir / "spool"
    redis_url = settings.redis_url
    prefix = key_prefix if key_prefix is not None else _key_prefix_of(config)

    async def work(engine: AsyncEngine) -> int:
        from billing.leader import LeaderLock
        from billing.stream import RedisStream
        from tollway.resp import RespClient

        client = RespClient.from_url(redis_url, timeout_s=5.0) if redis_url else None
        stream = RedisStream(client, prefix=prefix) if client is not None else None
        leader = LeaderLock(client, f"{prefix}{{usage}}:leader") if client is not None else None
        writer = LedgerWriter(
            Ledger(engine),
            spool=Spool(directory),
            stream=stream,
            leader=leader,
            settings=WriterSettings(linger_s=linger_ms / 1000, claim_idle_ms=claim_idle_ms),
        )
        try:
            if once:
                try:
                    return await writer.run_once()
                finally:
                    if leader is not None:  # let the next writer lead at once
                        await leader.release()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await writer.run(stop)
            return 0
        finally:
            if stream is not None:
                await stream.close()
            if client is not None:
                await client.aclose()

    moved = run(work)
    if as_json:
        print_json({"moved": moved})
    elif once:
        Console().print(f"moved {moved} usage records into the ledger")
