"""`tollway billing export` and `reconcile` through the command line, customers from tenants."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from billing.ledger import Ledger
from billing.usage import UsageRecord, UsageSource, UsageStatus
from gateway.database import create_engine, migrate
from gateway.tenancy.schemas import TenantCreate
from gateway.tenancy.store import TenantStore
from tests.billing.stripe_standin import StripeStandin
from tollway.cli import build

METERS = {"mtr_cost": "tollway_cost", "mtr_in": "tollway_input"}
STRIPE = {
    "bucket": "hour",
    "meters": [
        {
            "name": "cost",
            "event_name": "tollway_cost",
            "meter_id": "mtr_cost",
            "quantity": "cost_micros",
        },
        {
            "name": "input",
            "event_name": "tollway_input",
            "meter_id": "mtr_in",
            "quantity": "prompt_tokens",
        },
    ],
}


@pytest.fixture
def standin() -> Iterator[tuple[StripeStandin, str]]:
    """The Stripe stand-in on its own event loop (the CLI runs asyncio itself)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = StripeStandin(meters=METERS)
    base = asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server, base
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def record(i: int, tenant: str, at: datetime) -> UsageRecord:
    return UsageRecord(
        request_id=f"req-{tenant}-{i}",
        tenant_id=tenant,
        key_id="k",
        model="m",
        created_at=at,
        prompt_tokens=100 + i,
        completion_tokens=10,
        status=UsageStatus.OK,
        usage_source=UsageSource.UPSTREAM,
        cost_micros=1000 + i,
    )


async def seed(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
        store = TenantStore(engine)
        paying = await store.create_tenant(TenantCreate(name="a", stripe_customer_id="cus_A"))
        free = await store.create_tenant(TenantCreate(name="b"))
        at = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
        await Ledger(engine).write(
            [record(i, paying.id, at) for i in range(5)]
            + [record(i, free.id, at) for i in range(3)]
        )
    finally:
        await engine.dispose()


def test_export_and_reconcile_from_the_command_line(
    tmp_path: Path, standin: tuple[StripeStandin, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, base = standin
    url = f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}"
    asyncio.run(seed(url))
    stripe = tmp_path / "stripe.yaml"
    stripe.write_text(yaml.safe_dump({"stripe": STRIPE}))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_standin")
    monkeypatch.setenv("TOLLWAY_STRIPE_API_BASE", base)
    runner = CliRunner()
    result = runner.invoke(build(), ["billing", "export", "--stripe", str(stripe), "--json"])
    assert result.exit_code == 0, result.output
    totals = server.totals()
    assert totals[("cus_A", "tollway_cost")] == sum(1000 + i for i in range(5))
    assert totals[("cus_A", "tollway_input")] == sum(100 + i for i in range(5))
    assert all(customer == "cus_A" for customer, _ in totals)  # the free tenant: none
    again = runner.invoke(build(), ["billing", "export", "--stripe", str(stripe), "--json"])
    assert again.exit_code == 0 and server.totals() == totals  # re-running sends nothing twice
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    window = ["--from", (now - timedelta(hours=5)).isoformat(), "--to", now.isoformat()]
    check = runner.invoke(
        build(), ["billing", "reconcile", "--stripe", str(stripe), *window, "--json"]
    )
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout)["matches"] is True


def test_a_customers_file_merges_into_the_stored_mapping(
    tmp_path: Path, standin: tuple[StripeStandin, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, base = standin
    url = f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}"
    asyncio.run(seed(url))
    engine_tenants = asyncio.run(tenant_ids(url))
    stripe = tmp_path / "stripe.yaml"
    stripe.write_text(yaml.safe_dump({"stripe": STRIPE}))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_standin")
    monkeypatch.setenv("TOLLWAY_STRIPE_API_BASE", base)
    runner = CliRunner()
    customers = tmp_path / "customers.yaml"
    # A contradiction of the stored customer is refused before anything is sent.
    customers.write_text(yaml.safe_dump({engine_tenants["a"]: "cus_Z"}))
    refused = runner.invoke(
        build(), ["billing", "export", "--stripe", str(stripe), "--customers", str(customers)]
    )
    assert refused.exit_code == 2 and "cus_A" in refused.output and server.totals() == {}
    # The free tenant gets a customer from the file; the paying one keeps its own.
    customers.write_text(yaml.safe_dump({engine_tenants["b"]: "cus_B"}))
    result = runner.invoke(
        build(),
        ["billing", "export", "--stripe", str(stripe), "--customers", str(customers), "--json"],
    )
    assert result.exit_code == 0, result.output
    totals = server.totals()
    assert totals[("cus_A", "tollway_cost")] == sum(1000 + i for i in range(5))
    assert totals[("cus_B", "tollway_cost")] == sum(1000 + i for i in range(3))
    # reconcile without the file agrees: the mapping was stored.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    window = ["--from", (now - timedelta(hours=5)).isoformat(), "--to", now.isoformat()]
    check = runner.invoke(
        build(), ["billing", "reconcile", "--stripe", str(stripe), *window, "--json"]
    )
    assert check.exit_code == 0, check.output
    rows = json.loads(check.stdout)["rows"]
    assert {r["customer_id"] for r in rows} == {"cus_A", "cus_B"}
    assert all(r["matches"] for r in rows)


async def tenant_ids(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        return {t.name: t.id for t in await TenantStore(engine).list_tenants()}
    finally:
        await engine.dispose()
