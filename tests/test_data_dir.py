"""One data-directory story: every database command says which database it uses.

After ``make demo`` (data in ``./.tollway/demo``) a command run with the default data
directory (``./.tollway``) used to create a second database silently. Now each one
names its database on stderr (password masked), points at the demo's data when it is
about to create a new database next to it, and the demo prints its data directory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from billing.cli import register
from gateway.demo import _banner
from gateway.settings import StoreSettings
from tests.billing.test_pricing import BOOK_YAML
from tollway.database import create_engine, database_notice, sqlite_url


@pytest.fixture
def in_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory where `make demo` ran: the demo's database exists."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("TOLLWAY_DATA_DIR", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)

    async def create() -> None:
        engine = create_engine(sqlite_url(tmp_path / ".tollway" / "demo"))
        async with engine.begin():
            pass
        await engine.dispose()

    asyncio.run(create())
    assert (tmp_path / ".tollway" / "demo" / "tollway.db").exists()
    return tmp_path


def _cli() -> typer.Typer:
    root = typer.Typer()
    register(root, StoreSettings)
    return root


def test_pricing_apply_names_its_database_and_the_demos(in_project: Path) -> None:
    book = in_project / "pricing.yaml"
    book.write_text(BOOK_YAML)
    result = CliRunner().invoke(_cli(), ["pricing", "apply", str(book)])
    assert result.exit_code == 0, result.output
    default = (in_project / ".tollway" / "tollway.db").resolve()
    assert f"database: sqlite+aiosqlite:///{default}" in result.stderr
    assert "TOLLWAY_DATA_DIR=.tollway/demo" in result.stderr
    # Once it exists, the default database is simply named.
    again = CliRunner().invoke(_cli(), ["pricing", "show"])
    assert again.exit_code == 0 and "note:" not in again.stderr


def test_with_the_demos_data_dir_the_cli_uses_the_demos_database(
    in_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOLLWAY_DATA_DIR", ".tollway/demo")
    book = in_project / "pricing.yaml"
    book.write_text(BOOK_YAML)
    result = CliRunner().invoke(_cli(), ["pricing", "apply", str(book)])
    assert result.exit_code == 0, result.output
    demo = (in_project / ".tollway" / "demo" / "tollway.db").resolve()
    assert result.stderr.splitlines() == [f"database: sqlite+aiosqlite:///{demo}"]
    assert not (in_project / ".tollway" / "tollway.db").exists()


def test_the_database_url_is_printed_without_its_password() -> None:
    lines = database_notice("postgresql+asyncpg://tollway:s3cret@db:5432/tollway", None)
    assert lines == ["database: postgresql+asyncpg://tollway:***@db:5432/tollway"]


def test_the_demo_prints_its_data_directory(tmp_path: Path) -> None:
    banner = _banner("http://127.0.0.1:8000/v1", "tw-key", "tw-admin", tmp_path)
    assert f"TOLLWAY_DATA_DIR={tmp_path}" in banner.splitlines()


def test_the_demo_prints_a_codex_provider_for_its_own_address(tmp_path: Path) -> None:
    banner = _banner("http://127.0.0.1:8123/v1", "tw-key", "tw-admin", tmp_path)
    lines = [line.strip() for line in banner.splitlines()]
    assert 'base_url = "http://127.0.0.1:8123/v1"' in lines
    assert 'wire_api = "responses"' in lines
    assert 'TOLLWAY_API_KEY=tw-key codex exec --skip-git-repo-check "Hello!"' in lines
