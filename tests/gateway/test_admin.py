"""The admin API: tenants and keys, scopes, revocation, isolation, bad input."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.gateway.fake_worker import serve_fake_worker
from tests.gateway.harness import gateway_config, running_gateway

ADMIN = "tw-admin-test-token-0123456789"
ADMIN_H = {"authorization": f"Bearer {ADMIN}"}
MESSAGES = [{"role": "user", "content": "hi"}]


def config(worker: str) -> dict[str, Any]:
    cfg = gateway_config([worker], admin_token=ADMIN)
    cfg["auth"] = {"keys": []}
    cfg["models"] = {"m": {"route": "pool:p"}, "m2": {"route": "pool:p"}}
    return cfg


async def chat(client: httpx.AsyncClient, key: str, model: str = "m") -> httpx.Response:
    return await client.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": MESSAGES},
    )


async def new_tenant_and_key(
    client: httpx.AsyncClient, key_body: dict[str, Any] | None = None, **tenant: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    resp = await client.post("/admin/v1/tenants", headers=ADMIN_H, json={"name": "acme", **tenant})
    assert resp.status_code == 201, resp.text
    t = resp.json()
    resp = await client.post(
        f"/admin/v1/tenants/{t['id']}/keys", headers=ADMIN_H, json=key_body or {"name": "ci"}
    )
    assert resp.status_code == 201, resp.text
    return t, resp.json()


async def test_tenant_and_key_lifecycle() -> None:
    async with serve_fake_worker() as worker, running_gateway(config(worker.url)) as (_, client):
        tenant, key = await new_tenant_and_key(
            client, limits={"rpm": 100}, budgets={"daily_usd": "5.50"}
        )
        assert tenant["status"] == "active" and tenant["limits"]["rpm"] == 100
        assert tenant["budgets"]["daily_usd"] == "5.50"
        secret = key["key"]
        assert secret.startswith("tw-") and key["prefix"] == secret[:10]
        assert (await chat(client, secret)).status_code == 200

        listed = await client.get(f"/admin/v1/tenants/{tenant['id']}/keys", headers=ADMIN_H)
        assert listed.status_code == 200
        assert [k["id"] for k in listed.json()["data"]] == [key["id"]]
        assert "key" not in listed.json()["data"][0]  # the secret is shown once only
        assert secret not in listed.text

        patched = await client.patch(
            f"/admin/v1/tenants/{tenant['id']}", headers=ADMIN_H, json={"name": "acme2"}
        )
        assert patched.json()["name"] == "acme2" and patched.json()["limits"]["rpm"] == 100

        rotated = await client.post(f"/admin/v1/keys/{key['id']}/rotate", headers=ADMIN_H)
        assert rotated.status_code == 201
        new_secret = rotated.json()["key"]
        assert (await chat(client, secret)).json()["error"]["code"] == "revoked_api_key"
        assert (await chat(client, new_secret)).status_code == 200

        revoked = await client.delete(f"/admin/v1/keys/{rotated.json()['id']}", headers=ADMIN_H)
        assert revoked.json()["revoked_at"] is not None
        resp = await chat(client, new_secret)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "revoked_api_key"


async def test_scopes_and_suspension() -> None:
    async with serve_fake_worker() as worker, running_gateway(config(worker.url)) as (_, client):
        tenant, key = await new_tenant_and_key(
            client, {"scopes": {"models": ["m"]}}, allowed_models=["m", "m2"]
        )
        assert (await chat(client, key["key"], "m")).status_code == 200
        resp = await chat(client, key["key"], "m2")
        assert resp.status_code == 403
        assert resp.json()["error"]["code"] == "model_not_allowed"
        auth = {"authorization": f"Bearer {key['key']}"}
        models = (await client.get("/v1/models", headers=auth)).json()["data"]
        assert [m["id"] for m in models] == ["m"]
        assert (await client.get("/v1/models/m2", headers=auth)).status_code == 404

        await client.post(f"/admin/v1/tenants/{tenant['id']}/suspend", headers=ADMIN_H)
        resp = await chat(client, key["key"])
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "tenant_suspended"
        await client.patch(
            f"/admin/v1/tenants/{tenant['id']}", headers=ADMIN_H, json={"status": "active"}
        )
        assert (await chat(client, key["key"])).status_code == 200


async def test_expired_key_is_401() -> None:
    async with serve_fake_worker() as worker, running_gateway(config(worker.url)) as (_, client):
        _, key = await new_tenant_and_key(client, {"expires_at": "2020-01-01T00:00:00Z"})
        resp = await chat(client, key["key"])
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "expired_api_key"


async def test_tenants_never_reach_admin_and_tokens_are_checked() -> None:
    async with serve_fake_worker() as worker, running_gateway(config(worker.url)) as (_, client):
        tenant, key = await new_tenant_and_key(client)
        for headers in (
            {},
            {"authorization": f"Bearer {key['key']}"},
            {"authorization": "Bearer x"},
        ):
            resp = await client.get("/admin/v1/tenants", headers=headers)
            assert resp.status_code == 401, headers
            assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    cfg = config("http://127.0.0.1:9")
    del cfg["admin_token"]
    async with running_gateway(cfg) as (_, client):
        resp = await client.get("/admin/v1/tenants", headers=ADMIN_H)
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "admin_disabled"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        ("post", "/admin/v1/tenants", {"name": "x", "limits": {"rpm": -1}}, 400, "limits.rpm"),
        ("post", "/admin/v1/tenants", {"name": ""}, 400, "name"),
        ("post", "/admin/v1/tenants", {"nme": "typo"}, 400, None),
        ("post", "/admin/v1/tenants", "not json", 400, None),
        (
            "post",
            "/admin/v1/tenants",
            {"name": "x", "budgets": {"daily_usd": "-3"}},
            400,
            "budgets.daily_usd",
        ),
        ("get", "/admin/v1/tenants/ten_missing", None, 404, "tenant_id"),
        ("post", "/admin/v1/tenants/ten_missing/keys", {}, 404, "tenant_id"),
        ("delete", "/admin/v1/keys/key_missing", None, 404, "key_id"),
        ("patch", "/admin/v1/tenants/ten_missing", {"name": "y"}, 404, "tenant_id"),
    ],
)
async def test_bad_admin_input_is_refused_and_changes_nothing(
    method: str, path: str, body: Any, status: int, param: str | None
) -> None:
    async with running_gateway(config("http://127.0.0.1:9")) as (_, client):
        kwargs: dict[str, Any] = {"headers": ADMIN_H}
        if isinstance(body, str):
            kwargs["content"] = body
            kwargs["headers"] = {**ADMIN_H, "content-type": "application/json"}
        elif body is not None:
            kwargs["json"] = body
        resp = await client.request(method, path, **kwargs)
        assert resp.status_code == status, resp.text
        err = resp.json()["error"]
        if param is not None:
            assert err["param"] == param
        listed = await client.get("/admin/v1/tenants", headers=ADMIN_H)
        assert listed.json()["data"] == []


async def test_database_holds_no_plaintext_secret(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with (
        serve_fake_worker() as worker,
        running_gateway(config(worker.url), {"database_url": url}) as (_, client),
    ):
        _, key = await new_tenant_and_key(client)
    raw = (tmp_path / "db.sqlite").read_bytes()
    wal = tmp_path / "db.sqlite-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    secret = key["key"].encode()
    assert secret not in raw and secret[3:] not in raw
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM api_keys")).all()
    engine.dispose()
    assert all(key["key"] not in str(r) for r in rows)


async def test_revocation_reaches_another_replica_within_a_second(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.sqlite'}"
    async with (
        serve_fake_worker() as worker,
        running_gateway(config(worker.url), {"database_url": url}) as (_, a),
        running_gateway(config(worker.url), {"database_url": url}) as (_, b),
    ):
        _, key = await new_tenant_and_key(a)
        assert (await chat(b, key["key"])).status_code == 200  # b caches the principal
        await a.delete(f"/admin/v1/keys/{key['id']}", headers=ADMIN_H)
        started = time.monotonic()
        while (await chat(b, key["key"])).status_code == 200:
            assert time.monotonic() - started < 1.0, "replica b still accepts a revoked key"
            await asyncio.sleep(0.02)
        assert (await chat(b, key["key"])).status_code == 401
