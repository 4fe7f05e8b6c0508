"""``tollway tenants`` and ``tollway keys``, against a database and the admin API."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from gateway.tenancy.client import AdminApiClient
from gateway.tenancy.schemas import KeyCreate, TenantCreate
from tests.gateway.harness import gateway_config, running_gateway
from tollway.cli import build
from tollway.errors import InvalidRequest, NotFound

runner = CliRunner()


def tollway(*args: str) -> tuple[int, str]:
    result = runner.invoke(build(), list(args))
    # What scripts read (stdout) on success; stderr also names the database used.
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_cli_against_the_database(tmp_path: Path) -> None:
    db = ["--database-url", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"]
    code, out = tollway(
        "tenants", "create", "acme", "--rpm", "60", "--daily-usd", "2.5", *db, "--json"
    )
    assert code == 0, out
    tenant = json.loads(out)
    assert tenant["limits"]["rpm"] == 60 and tenant["budgets"]["daily_usd"] == "2.5"

    code, out = tollway(
        "keys", "create", tenant["id"], "--name", "ci", "--models", "m1,m2", *db, "--json"
    )
    assert code == 0, out
    key = json.loads(out)
    assert key["key"].startswith("tw-") and key["scopes"]["models"] == ["m1", "m2"]

    code, out = tollway("keys", "list", tenant["id"], *db, "--json")
    listed = json.loads(out)
    assert [k["id"] for k in listed] == [key["id"]] and key["key"] not in out

    code, out = tollway("tenants", "list", *db)  # a rich table
    assert code == 0 and "acme" in out

    code, out = tollway("keys", "revoke", key["id"], *db, "--json")
    assert code == 0 and json.loads(out)["revoked_at"]

    code, out = tollway("tenants", "suspend", tenant["id"], *db, "--json")
    assert json.loads(out)["status"] == "suspended"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["tenants", "create", "x", "--rpm", "-5"], 2, "rpm"),
        (["tenants", "create", "x", "--daily-usd", "abc"], 2, "daily_usd"),
        (["keys", "create", "ten_nope"], 1, "No tenant with id"),
        (["keys", "revoke", "key_nope"], 1, "No API key with id"),
        (["tenants", "show", "ten_nope"], 1, "No tenant with id"),
        (["keys", "create", "ten_x", "--expires-at", "soon"], 2, "expires_at"),
    ],
)
def test_cli_bad_input_changes_nothing(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    db = ["--database-url", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"]
    got, out = tollway(*args, *db)
    assert got == code, out
    assert message in out
    assert tollway("tenants", "list", *db, "--json")[1].strip() == "[]"


async def test_admin_api_client_through_the_gateway() -> None:
    cfg = gateway_config(["http://127.0.0.1:9"], admin_token="tw-admin-cli-0123456789")
    async with running_gateway(cfg) as (app, _):
        client = AdminApiClient(
            "http://gateway", "tw-admin-cli-0123456789", transport=httpx.ASGITransport(app=app)
        )
        try:
            tenant = await client.create_tenant(TenantCreate(name="via-api"))
            key = await client.create_key(tenant.id, KeyCreate(name="k"))
            assert key.key.startswith("tw-")
            assert [k.id for k in await client.list_keys(tenant.id)] == [key.id]
            with pytest.raises(NotFound):
                await client.get_tenant("ten_missing")
            with pytest.raises(InvalidRequest):
                await client.create_key(tenant.id, KeyCreate.model_construct(name=""))
        finally:
            await client.close()
