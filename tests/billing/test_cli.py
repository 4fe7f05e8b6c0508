"""The pricing, usage and billing commands against a SQLite file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from billing.cli import register
from billing.spool import Spool
from gateway.settings import StoreSettings
from tests.billing.conftest import make_record
from tests.billing.test_pricing import BOOK_YAML


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("TOLLWAY_DATA_DIR", str(tmp_path / "data"))
    root = typer.Typer()
    register(root, StoreSettings)
    return root


def invoke(app: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    # What scripts read (stdout) on success; stderr also names the database used.
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_pricing_apply_show_diff(app: typer.Typer, tmp_path: Path) -> None:
    book = tmp_path / "pricing.yaml"
    book.write_text(BOOK_YAML)
    assert invoke(app, "pricing", "show")[0] == 2  # nothing stored yet
    code, out = invoke(app, "pricing", "apply", str(book), "--json")
    assert code == 0 and json.loads(out) == {"version": 1}
    code, out = invoke(app, "pricing", "show", "--json")
    assert json.loads(out)["version"] == 1
    code, out = invoke(app, "pricing", "show")  # CliRunner: 80 columns
    assert code == 0 and "price book version 1" in out
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    for rate in json.loads(invoke(app, "pricing", "show", "--json")[1])["document"]["books"][0][
        "rates"
    ]:
        assert rate["id"] in out and (rate.get("model") or "") in out

    book.write_text(BOOK_YAML.replace('output_per_million: "0.90"', 'output_per_million: "0.95"'))
    code, out = invoke(app, "pricing", "diff", str(book), "--json")
    assert json.loads(out)["changes"] == [
        {
            "rate": "h1/small",
            "change": "changed",
            "field": "output_per_million",
            "old": "0.90",
            "new": "0.95",
        }
    ]
    code, out = invoke(app, "pricing", "diff", str(book))
    assert code == 0 and "h1/small" in out and "output_per_million" in out and "…" not in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(BOOK_YAML.replace('"0.30"', "0.30"))
    code, out = invoke(app, "pricing", "apply", str(bad))
    assert code == 2 and "books.0.rates.1.input_per_million" in out
    assert json.loads(invoke(app, "pricing", "show", "--json")[1])["version"] == 1
    assert json.loads(invoke(app, "pricing", "apply", str(book), "--json")[1]) == {"version": 2}


def test_worker_once_then_usage(app: typer.Typer, tmp_path: Path) -> None:
    async def spool_records() -> None:
        spool = Spool(tmp_path / "data" / "spool")
        await spool.open()
        for i in range(5):
            await spool.append(make_record(f"r{i}", cost_micros=1_000_000).to_bytes())
        await spool.close()

    asyncio.run(spool_records())
    code, out = invoke(app, "billing", "worker", "--once", "--json")
    assert code == 0 and json.loads(out) == {"moved": 5}
    code, out = invoke(app, "usage", "--tenant", "t1", "--group-by", "model", "--json")
    data = json.loads(out)["data"]
    assert data[0]["group"] == "agent-small" and data[0]["requests"] == 5
    assert data[0]["cost_usd"] == "5.000000"
    code, out = invoke(app, "usage", "--from", "2025-06-02")
    assert code == 0
    assert invoke(app, "usage", "--from", "yesterday")[0] == 2


def test_worker_reads_the_usage_stream_under_the_gateways_key_prefix(
    app: typer.Typer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    redis_prefix: str,
) -> None:
    """A gateway with ``limits.key_prefix`` writes its stream under that prefix; the
    external worker must read the same stream (it used to read ``tollway:`` only)."""
    import redis.asyncio as aioredis

    from billing.stream import RedisStream
    from tollway.resp import RespClient

    async def produce(first: int) -> None:
        client = RespClient.from_url(redis_url, timeout_s=2.0)
        try:
            stream = RedisStream(client, prefix=redis_prefix)
            for i in range(first, first + 3):
                await stream.append(make_record(f"p{i}").to_bytes())
        finally:
            await client.aclose()

    async def cleanup() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    asyncio.run(produce(0))
    monkeypatch.setenv("REDIS_URL", redis_url)
    config = tmp_path / "tollway.yaml"
    config.write_text(f"limits:\n  key_prefix: '{redis_prefix}'\n")
    try:
        code, out = invoke(app, "billing", "worker", "--once", "--json")
        assert code == 0 and json.loads(out) == {"moved": 0}  # wrong stream: nothing
        code, out = invoke(app, "billing", "worker", "--once", "--json", "--config", str(config))
        assert code == 0 and json.loads(out) == {"moved": 3}
        asyncio.run(produce(3))
        code, out = invoke(
            app, "billing", "worker", "--once", "--json", "--key-prefix", redis_prefix
        )
        assert code == 0 and json.loads(out) == {"moved": 3}
        code, out = invoke(app, "usage", "--tenant", "t1", "--json")
        assert json.loads(out)["data"][0]["requests"] == 6
        config.write_text("limits:\n  key_prefix: 7\n")
        assert invoke(app, "billing", "worker", "--once", "--config", str(config))[0] == 2
    finally:
        asyncio.run(cleanup())
