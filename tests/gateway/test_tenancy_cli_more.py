"""``tollway tenants``/``keys``: whole ids at 80 columns, unsuspend, the Stripe customer."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from tests.gateway.test_tenancy_cli import tollway
from tollway.clitable import print_table


def db(tmp_path: Path) -> list[str]:
    return ["--database-url", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"]


def test_ids_and_secrets_are_whole_in_an_80_column_terminal(tmp_path: Path) -> None:
    code, out = tollway(
        "tenants",
        "create",
        "a tenant with a rather long descriptive name for its row",
        "--rpm",
        "600",
        "--tpm",
        "200000",
        "--max-concurrent",
        "50",
        "--daily-usd",
        "25",
        "--monthly-usd",
        "500",
        *db(tmp_path),
        "--json",
    )
    assert code == 0, out
    tenant = json.loads(out)
    code, out = tollway("tenants", "list", *db(tmp_path))  # CliRunner: 80 columns
    assert code == 0 and tenant["id"] in out, out
    assert max(len(line) for line in out.splitlines()) <= 80
    code, out = tollway("keys", "create", tenant["id"], "--name", "ci", *db(tmp_path))
    assert code == 0, out
    code, listed = tollway("keys", "list", tenant["id"], "--json", *db(tmp_path))
    key = json.loads(listed)[0]
    # The secret, the key id and the tenant id: too wide together, so one per line.
    assert key["id"] in out and tenant["id"] in out and key["prefix"] in out
    secret = next(word for word in out.split() if word.startswith("tw-") and len(word) > 20)
    assert secret.startswith(key["prefix"]) and "…" not in out


def test_print_table_folds_other_columns_and_keeps_whole_ones() -> None:
    out = io.StringIO()
    console = Console(file=out, width=60)
    ident = "ten_" + "0123456789abcdef01234567"
    print_table(["id", "note"], [[ident, "word " * 30]], whole={"id"}, title="t", console=console)
    text = out.getvalue()
    assert ident in text and "…" not in text and len(text.splitlines()) > 5
    out = io.StringIO()
    print_table(
        ["id", "other"],
        [[ident, ident]],
        whole={"id", "other"},
        console=Console(file=out, width=50),
    )
    assert out.getvalue().splitlines() == [f"id     {ident}", f"other  {ident}"]


def test_unsuspend_and_the_stripe_customer(tmp_path: Path) -> None:
    code, out = tollway("tenants", "create", "acme", *db(tmp_path), "--json")
    tenant_id = json.loads(out)["id"]
    code, out = tollway("tenants", "suspend", tenant_id, *db(tmp_path), "--json")
    assert json.loads(out)["status"] == "suspended"
    code, out = tollway("tenants", "unsuspend", tenant_id, *db(tmp_path), "--json")
    assert code == 0 and json.loads(out)["status"] == "active"
    code, out = tollway(
        "tenants", "update", tenant_id, "--stripe-customer", "cus_Q1", *db(tmp_path), "--json"
    )
    assert code == 0 and json.loads(out)["stripe_customer_id"] == "cus_Q1"
    code, out = tollway("tenants", "update", tenant_id, "--name", "acme2", *db(tmp_path), "--json")
    assert json.loads(out)["stripe_customer_id"] == "cus_Q1"  # untouched when not given
    code, out = tollway(
        "tenants", "update", tenant_id, "--stripe-customer", "", *db(tmp_path), "--json"
    )
    assert code == 0 and json.loads(out)["stripe_customer_id"] is None
