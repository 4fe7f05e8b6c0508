"""``tollway tenants …`` and ``tollway keys …``.

They work against the database directly (``DATABASE_URL``, else the SQLite
file under ``TOLLWAY_DATA_DIR``) or, with ``--url``, against a running
gateway's admin API (``TOLLWAY_ADMIN_TOKEN``). Output is a rich table, or JSON
with ``--json`` for scripts. Bad input is refused before anything changes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console

from gateway.database import default_database_url
from gateway.settings import Settings
from gateway.tenancy.client import AdminApiClient, DatabaseClient, TenancyClient
from gateway.tenancy.schemas import (
    Budgets,
    KeyCreate,
    Limits,
    Scopes,
    TenantCreate,
    TenantUpdate,
)
from tollway.clitable import print_table
from tollway.database import database_notice
from tollway.errors import TollwayError

T = TypeVar("T")

tenants_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="TOLLWAY_ADMIN_URL", help="Gateway base URL (admin API)."),
]
DbOpt = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL (default: DATABASE_URL).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
RpmOpt = Annotated[int | None, typer.Option("--rpm", help="Requests per minute.")]
TpmOpt = Annotated[int | None, typer.Option("--tpm", help="Tokens per minute.")]
ConcOpt = Annotated[int | None, typer.Option("--max-concurrent", help="Requests in flight.")]
DailyOpt = Annotated[str | None, typer.Option("--daily-usd", help="Daily budget in USD.")]
MonthlyOpt = Annotated[str | None, typer.Option("--monthly-usd", help="Monthly budget in USD.")]


def _client(url: str | None, database_url: str | None) -> Callable[[], Awaitable[TenancyClient]]:
    settings = Settings()

    async def make() -> TenancyClient:
        if url:
            token = settings.admin_token.get_secret_value() if settings.admin_token else ""
            if not token:
                raise TollwayError("TOLLWAY_ADMIN_TOKEN is required with --url")
            return AdminApiClient(url, token)
        chosen = database_url or settings.database_url
        db = chosen or default_database_url(settings.data_dir)
        for line in database_notice(db, None if chosen else settings.data_dir):
            typer.echo(line, err=True)
        return await DatabaseClient.open(db)

    return make


def _run(
    make: Callable[[], Awaitable[TenancyClient]],
    op: Callable[[TenancyClient], Awaitable[T]],
) -> T:
    async def main() -> T:
        client = await make()
        try:
            return await op(client)
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except TollwayError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc.message}", highlight=False)
        raise typer.Exit(code=1) from None


def _build(factory: Callable[[], T]) -> T:
    """Construct a request body; refuse bad values before anything runs."""
    try:
        return factory()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        Console(stderr=True).print(f"[bold red]error:[/] {where}: {first['msg']}", highlight=False)
        raise typer.Exit(code=2) from None


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value))


def _print(items: BaseModel | Sequence[BaseModel], as_json: bool, columns: list[str]) -> None:
    many = not isinstance(items, BaseModel)
    rows = list(items) if not isinstance(items, BaseModel) else [items]
    data = [r.model_dump(mode="json") for r in rows]
    if as_json:
        typer.echo(json.dumps(data if many else data[0], indent=2, default=_default))
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in data]
    print_table(columns, cells, whole=WHOLE_COLUMNS)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v is not None) or "-"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


#: Columns shown whole at any terminal width: they are copied into other commands.
WHOLE_COLUMNS = frozenset({"id", "key", "prefix", "tenant_id", "stripe_customer_id"})
TENANT_COLUMNS = ["id", "name", "status", "limits", "budgets", "created_at"]
KEY_COLUMNS = ["id", "prefix", "name", "limits", "budgets", "scopes", "revoked_at"]


def _limits(rpm: int | None, tpm: int | None, conc: int | None) -> Limits:
    return Limits(rpm=rpm, tpm=tpm, max_concurrent=conc)


def _budgets(daily: str | None, monthly: str | None) -> Budgets:
    return Budgets.model_validate({"daily_usd": daily, "monthly_usd": monthly})


@tenants_app.command("create")
def tenants_create(
    name: str,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    max_concurrent: ConcOpt = None,
    daily_usd: DailyOpt = None,
    monthly_usd: MonthlyOpt = None,
    stripe_customer: Annotated[str | None, typer.Option(help="Stripe customer id.")] = None,
    url: UrlOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a tenant."""
    body = _build(
        lambda: TenantCreate(
            name=name,
            limits=_limits(rpm, tpm, max_concurrent),
            budgets=_budgets(daily_usd, monthly_usd),
            stripe_customer_id=stripe_customer,
        )
    )
    tenant = _run(_client(url, database_url), lambda c: c.create_tenant(body))
    _print(tenant, as_json, TENANT_COLUMNS)


@tenants_app.command("list")
def tenants_list(url: UrlOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List tenants."""
    _print(_run(_client(url, database_url), lambda c: c.list_tenants()), as_json, TENANT_COLUMNS)


@tenants_app.command("show")
def tenants_show(
    tenant_id: str, url: UrlOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one tenant."""
    tenant = _run(_client(url, database_url), lambda c: c.get_tenant(tenant_id))
    _print(tenant, as_json, TENANT_COLUMNS)


@tenants_app.command("update")
def tenants_update(
    tenant_id: str,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    max_concurrent: ConcOpt = None,
    daily_usd: DailyOpt = None,
    monthly_usd: MonthlyOpt = None,
    stripe_customer: Annotated[
        str | None, typer.Option(help='Stripe customer id ("" clears it).')
    ] = None,
    url: UrlOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a tenant's name, limits, budgets or Stripe customer.

    Limits and budgets are replaced whole.
    """
    fields: dict[str, Any] = {}
    if name is not None:
        fields["name"] = name
    if stripe_customer is not None:
        fields["stripe_customer_id"] = stripe_customer or None
    if any(v is not None for v in (rpm, tpm, max_concurrent)):
        fields["limits"] = _build(lambda: _limits(rpm, tpm, max_concurrent))
    if daily_usd is not None or monthly_usd is not None:
        fields["budgets"] = _build(lambda: _budgets(daily_usd, monthly_usd))
    body = _build(lambda: TenantUpdate(**fields))
    tenant = _run(_client(url, database_url), lambda c: c.update_tenant(tenant_id, body))
    _print(tenant, as_json, TENANT_COLUMNS)


@tenants_app.command("suspend")
def tenants_suspend(
    tenant_id: str, url: UrlOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """Suspend a tenant: its keys stop working at once."""
    body = TenantUpdate(status="suspended")
    tenant = _run(_client(url, database_url), lambda c: c.update_tenant(tenant_id, body))
    _print(tenant, as_json, TENANT_COLUMNS)


@tenants_app.command("unsuspend")
def tenants_unsuspend(
    tenant_id: str, url: UrlOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """Make a suspended tenant active again: its keys work again at once."""
    body = TenantUpdate(status="active")
    tenant = _run(_client(url, database_url), lambda c: c.update_tenant(tenant_id, body))
    _print(tenant, as_json, TENANT_COLUMNS)


@keys_app.command("create")
def keys_create(
    tenant_id: str,
    name: Annotated[str, typer.Option(help="Key name.")] = "default",
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    max_concurrent: ConcOpt = None,
    daily_usd: DailyOpt = None,
    monthly_usd: MonthlyOpt = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated allowed models.")] = None,
    agent_types: Annotated[
        str | None, typer.Option(help="Comma-separated allowed agent types.")
    ] = None,
    default_agent_type: Annotated[str | None, typer.Option(help="Default agent type.")] = None,
    expires_at: Annotated[str | None, typer.Option(help="ISO 8601 expiry time.")] = None,
    url: UrlOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; its secret is printed once."""
    body = _build(
        lambda: KeyCreate.model_validate(
            {
                "name": name,
                "limits": _limits(rpm, tpm, max_concurrent),
                "budgets": _budgets(daily_usd, monthly_usd),
                "scopes": Scopes(
                    models=models.split(",") if models else None,
                    agent_types=agent_types.split(",") if agent_types else None,
                ),
                "default_agent_type": default_agent_type,
                "expires_at": expires_at,
            }
        )
    )
    key = _run(_client(url, database_url), lambda c: c.create_key(tenant_id, body))
    _print(key, as_json, ["id", "key", "prefix", "name", "tenant_id"])


@keys_app.command("list")
def keys_list(
    tenant_id: str, url: UrlOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """List a tenant's keys (never their secrets)."""
    _print(_run(_client(url, database_url), lambda c: c.list_keys(tenant_id)), as_json, KEY_COLUMNS)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str, url: UrlOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """Revoke a key: every replica refuses it within a second."""
    _print(_run(_client(url, database_url), lambda c: c.revoke_key(key_id)), as_json, KEY_COLUMNS)


@keys_app.command("rotate")
def keys_rotate(
    key_id: str, url: UrlOpt = None, database_url: DbOpt = None, as_json: JsonOpt = False
) -> None:
    """Revoke a key and issue a new secret with the same settings."""
    key = _run(_client(url, database_url), lambda c: c.rotate_key(key_id))
    _print(key, as_json, ["id", "key", "prefix", "name", "tenant_id"])


def register(app: typer.Typer) -> None:
    """Add ``tenants`` and ``keys`` to the ``tollway`` command line."""
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(keys_app, name="keys")
