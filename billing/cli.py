"""``tollway pricing|usage|billing``: price books, usage and Stripe from the shell.

Every command works against the billing database directly: ``DATABASE_URL``, else a
SQLite file ``tollway.db`` in ``TOLLWAY_DATA_DIR`` (default ``.tollway``). Each one
says on stderr which database it uses (password masked) and brings its schema up to
date first (:func:`tollway.schema.migrate`, as ``tollway serve`` does). Output is rich
tables; ``--json`` prints JSON for scripts. Register with :func:`register`, which is
given the settings (:class:`billing.database.Stores`): the environment is read where
the command line is composed, not here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.database import Stores, create_engine, database_url
from billing.pricing import PriceBook, document_json, load_price_book
from billing.pricing_store import PriceBookStore
from billing.queries import GroupBy, UsageFilter, usage_totals
from tollway.clitable import print_table
from tollway.database import database_notice
from tollway.errors import ConfigError, TollwayError
from tollway.schema import migrate

T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


#: Where the commands' settings come from, given by :func:`register` (the environment
#: is read in one place, where the command line is composed).
_stores: list[Callable[[], Stores]] = []


def stores() -> Stores:
    """The settings for the command being run (read when it runs)."""
    if not _stores:
        raise RuntimeError("billing.cli.register() was not called")
    return _stores[-1]()


def announce_database(url: str, settings: Stores) -> None:
    """Say on stderr which database a command uses (see
    :func:`tollway.database.database_notice`)."""
    directory = None if settings.database_url else settings.data_dir
    for line in database_notice(url, directory):
        typer.echo(line, err=True)


def fail(message: str) -> typer.Exit:
    """Print an error and give the exit to raise (status 2)."""
    console = Console(stderr=True, soft_wrap=True)
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code=2)


def run(work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``work`` with an engine on the billing database; errors exit with status 2."""

    settings = stores()
    url = database_url(settings)
    announce_database(url, settings)

    async def main() -> T:
        engine = create_engine(url)
        try:
            await migrate(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ConfigError as exc:
        raise fail(exc.message) from None
    except TollwayError as exc:
        raise fail(exc.message) from None


def print_json(data: Any) -> None:
    """Print JSON for scripts."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def parse_time(value: str | None, name: str) -> dt.datetime | None:
    """An ISO 8601 option value as an aware datetime (UTC when no zone is given)."""
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"--{name}: not an ISO 8601 date or date-time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _rates(book: PriceBook) -> list[dict[str, str]]:
    rows = []
    for entry in document_json(book)["books"]:
        for rate in entry["rates"]:
            rows.append(
                {
                    "book": entry["name"],
                    "tenant": entry.get("tenant", ""),
                    "from": entry["effective_from"],
                    "to": entry.get("effective_to", ""),
                    **{key: str(value) for key, value in rate.items()},
                }
            )
    return rows


def _print_rates(title: str, rows: list[dict[str, str]]) -> None:
    columns = ["book", "tenant", "from", "to", "id", "model", "pool", "agent_type"]
    prices = sorted({k for row in rows for k in row} - set(columns))
    print_table(
        columns + prices,
        [[row.get(column, "") for column in columns + prices] for row in rows],
        whole={"book", "tenant", "id", "model", "pool", "agent_type"},
        title=title,
    )


# -- pricing ----------------------------------------------------------------------------

pricing_app = typer.Typer(help="Price books: show, apply and diff.", no_args_is_help=True)


@pricing_app.command("show")
def pricing_show(
    version: Annotated[int | None, typer.Option(help="A stored version (default: latest).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show the active (latest stored) price book, or a given version."""
    book = run(lambda engine: PriceBookStore(engine).get(version))
    if book is None:
        raise fail("no price book is stored; use `tollway pricing apply pricing.yaml`")
    if as_json:
        print_json({"version": book.version, "document": document_json(book)})
        return
    _print_rates(f"price book version {book.version}", _rates(book))
    if book.document.discounts:
        Console().print(
            "discounts: "
            + ", ".join(f"{t} {d}" for t, d in sorted(book.document.discounts.items()))
        )


@pricing_app.command("apply")
def pricing_apply(
    file: Annotated[Path, typer.Argument(help="The price book YAML file.")],
    note: Annotated[str | None, typer.Option(help="A note stored with the version.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate a price book file and store it as the next version (all replicas see it)."""
    try:
        book = load_price_book(file)
    except ConfigError as exc:
        raise fail(f"price book refused: {exc.message}") from None
    source = file.read_text(encoding="utf-8")
    stored = run(lambda engine: PriceBookStore(engine).apply(book, source=source, note=note))
    if as_json:
        print_json({"version": stored.version})
    else:
        Console().print(f"price book version {stored.version} is active")


def _diff(old: PriceBook | None, new: PriceBook) -> list[dict[str, str]]:
    def keyed(book: PriceBook | None) -> dict[str, dict[str, str]]:
        return {f"{r['book']}/{r['id']}": r for r in _rates(book)} if book else {}

    before, after = keyed(old), keyed(new)
    changes = []
    for rate_id in sorted(set(before) | set(after)):
        first, second = before.get(rate_id, {}), after.get(rate_id, {})
        if first == second:
            continue
        change = "added" if not first else "removed" if not second else "changed"
        fields = sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))
        for field in fields if change == "changed" else [""]:
            changes.append(
                {
                    "rate": rate_id,
                    "change": change,
                    "field": field,
                    "old": first.get(field, "") if field else "",
                    "new": second.get(field, "") if field else "",
                }
            )
    old_discounts = dict(old.document.discounts) if old else {}
    for tenant in sorted(set(old_discounts) | set(new.document.discounts)):
        a, b = old_discounts.get(tenant), new.document.discounts.get(tenant)
        if a != b:
            changes.append(
                {
                    "rate": f"discounts/{tenant}",
                    "change": "changed",
                    "field": "discount",
                    "old": "" if a is None else str(a),
                    "new": "" if b is None else str(b),
                }
            )
    return changes


@pricing_app.command("diff")
def pricing_diff(
    file: Annotated[Path, typer.Argument(help="The price book YAML file.")],
    as_json: JsonOption = False,
) -> None:
    """What applying a file would change against the active stored version."""
    try:
        new = load_price_book(file)
    except ConfigError as exc:
        raise fail(f"price book refused: {exc.message}") from None
    old = run(lambda engine: PriceBookStore(engine).get())
    changes = _diff(old, new)
    if as_json:
        print_json({"from_version": old.version if old else None, "changes": changes})
        return
    if not changes:
        Console().print("no changes")
        return
    columns = ["rate", "change", "field", "old", "new"]
    print_table(
        columns,
        [list(change.values()) for change in changes],
        whole={"rate", "field"},
        title=f"changes against version {old.version if old else 'none'}",
    )


# -- usage ------------------------------------------------------------------------------


def usage(
    tenant: Annotated[str | None, typer.Option(help="Tenant id.")] = None,
    key: Annotated[str | None, typer.Option(help="API key id.")] = None,
    model: Annotated[str | None, typer.Option(help="Public model name.")] = None,
    agent_type: Annotated[str | None, typer.Option(help="Agent type.")] = None,
    start: Annotated[str | None, typer.Option("--from", help="From (inclusive), ISO 8601.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="To (exclusive), ISO 8601.")] = None,
    group_by: Annotated[GroupBy, typer.Option(help="Group rows by.")] = GroupBy.DAY,
    as_json: JsonOption = False,
) -> None:
    """Usage totals from the ledger, grouped and filtered."""
    where = UsageFilter(
        tenant_id=tenant,
        key_id=key,
        model=model,
        agent_type=agent_type,
        start=parse_time(start, "from"),
        end=parse_time(end, "to"),
    )
    rows = run(lambda engine: usage_totals(engine, where, group_by))
    if as_json:
        print_json({"group_by": group_by.value, "data": [row.to_dict() for row in rows]})
        return
    headers = list(rows[0].to_dict()) if rows else ["group", "requests", "cost_usd"]
    print_table(
        headers,
        [[str(v) if v is not None else "-" for v in row.to_dict().values()] for row in rows],
        whole={"group"},  # a tenant or key id when grouped by one
        right=set(headers) - {"group"},
        title=f"usage by {group_by.value}",
    )


def register(app: typer.Typer, settings: Callable[[], Stores]) -> None:
    """Add ``pricing``, ``usage`` and ``billing`` to the ``tollway`` command line;
    ``settings`` reads the data directory and the stores' URLs when a command runs."""
    from billing.cli_billing import billing_app

    _stores[:] = [settings]
    app.add_typer(pricing_app, name="pricing")
    app.command("usage")(usage)
    app.add_typer(billing_app, name="billing")
