"""Schema migrations: safe when processes start together, run by every entry point.

Several real processes are released at the same instant (each waits on its stdin
after its imports) onto one fresh database, a few rounds over: every one must
migrate and exit 0, and the result is one versioned schema.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from billing.tables import create_all
from tests.conftest import admin_sql
from tollway.database import create_engine, sqlite_url
from tollway.schema import head_revisions

PROCESSES = 4
ROUNDS = 5
HEADS = head_revisions()

MIGRATOR = """
import asyncio, sys
import alembic.command, gateway.migrations, billing.migrations  # imported before the start
from gateway.database import create_engine, migrate

async def main(url, schema):
    engine = create_engine(url, schema=schema or None)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()

print("ready", flush=True)
for line in sys.stdin:  # one round per line: "URL SCHEMA"
    url, _, schema = line.strip().partition(" ")
    try:
        asyncio.run(main(url, schema))
    except Exception as exc:
        print(f"failed: {exc!r}"[:1000].replace("\\n", " "), flush=True)
    else:
        print("ok", flush=True)
"""


class Migrators:
    """:data:`PROCESSES` processes that each migrate a database when told, all at once."""

    def __init__(self) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", MIGRATOR],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.getcwd()},
            )
            for _ in range(PROCESSES)
        ]
        for proc in self.procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"ready"

    def together(self, url: str, schema: str = "") -> list[str]:
        """Release every process onto ``url`` at the same instant; what each answered."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{url} {schema}\n".encode())
        for proc in self.procs:  # the lines are written first, then flushed together
            assert proc.stdin is not None
            proc.stdin.flush()
        answers = []
        for proc in self.procs:
            assert proc.stdout is not None
            answers.append(proc.stdout.readline().decode(errors="replace").strip())
        return answers

    def close(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()


@pytest.fixture
def migrators() -> Iterator[Migrators]:
    group = Migrators()
    try:
        yield group
    finally:
        group.close()


async def _versions(url: str, schema: str | None = None) -> set[str]:
    engine = create_engine(url, schema=schema)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            return {str(row[0]) for row in rows}
    finally:
        await engine.dispose()


def test_processes_migrating_a_fresh_sqlite_file_together_all_succeed(
    tmp_path: Path, migrators: Migrators
) -> None:
    for round_ in range(ROUNDS):
        url = sqlite_url(tmp_path / f"round-{round_}")
        assert migrators.together(url) == ["ok"] * PROCESSES
        assert asyncio.run(_versions(url)) == HEADS


def test_processes_migrating_a_fresh_postgres_schema_together_all_succeed(
    postgres_url: str, migrators: Migrators
) -> None:
    for _ in range(ROUNDS):
        schema = f"t_{uuid.uuid4().hex[:12]}"
        admin_sql(postgres_url, f'CREATE SCHEMA "{schema}"')
        try:
            assert migrators.together(postgres_url, schema) == ["ok"] * PROCESSES
            assert asyncio.run(_versions(postgres_url, schema)) == HEADS
        finally:
            admin_sql(postgres_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    """The ``tollway`` command line on a fresh data directory (no DATABASE_URL)."""
    from gateway.cli import app
    from tollway.cli import build as build_cli

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("TOLLWAY_DATA_DIR", str(tmp_path / "data"))
    if not any(group.name == "pricing" for group in app.registered_groups):
        build_cli()
    return app


@pytest.mark.parametrize(
    "first",
    [["pricing", "show"], ["usage"], ["tenants", "list"], ["billing", "worker", "--once"]],
    ids=lambda args: " ".join(args),
)
def test_any_command_on_a_fresh_data_dir_leaves_a_versioned_database(
    cli: typer.Typer, tmp_path: Path, first: list[str]
) -> None:
    runner = CliRunner()
    runner.invoke(cli, first)  # `pricing show` exits 2: no book stored yet
    url = sqlite_url(tmp_path / "data")
    assert asyncio.run(_versions(url)) == HEADS
    upgrade = runner.invoke(cli, ["db", "upgrade"])
    assert upgrade.exit_code == 0, upgrade.output
    assert "database is up to date" in upgrade.stdout
    assert f"database: {url}" in upgrade.stderr


def test_a_database_created_before_versioning_is_adopted(cli: typer.Typer, tmp_path: Path) -> None:
    """Billing tables an older `tollway pricing` made without a version: serve and
    `db upgrade` record it and carry on instead of failing on existing tables."""
    url = sqlite_url(tmp_path / "data")

    async def unversioned() -> None:
        engine = create_engine(url)
        try:
            await create_all(engine)
        finally:
            await engine.dispose()

    asyncio.run(unversioned())
    upgrade = CliRunner().invoke(cli, ["db", "upgrade"])
    assert upgrade.exit_code == 0, upgrade.output
    assert asyncio.run(_versions(url)) == HEADS
