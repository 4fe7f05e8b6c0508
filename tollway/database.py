"""SQL engines for every package: SQLite by default, PostgreSQL in production.

The one place engine settings live, so the tenancy store and the usage ledger
open their databases the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import URL, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

#: The data directory when ``TOLLWAY_DATA_DIR`` is unset, and the demo's default one.
DEFAULT_DATA_DIR = Path(".tollway")
DEMO_DATA_DIR = DEFAULT_DATA_DIR / "demo"
_SQLITE_FILE = "tollway.db"


def masked_url(url: str | URL) -> str:
    """A database URL fit to print: the password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable database URL>"


def database_notice(url: str, data_dir: Path | None) -> list[str]:
    """What a command that opens ``url`` tells its user (on stderr).

    The URL, password masked; and, when the command is about to create a new SQLite
    database in the default data directory while ``tollway demo``'s exists, where the
    demo's is and how to use it. ``data_dir``: the data directory in effect when no
    ``DATABASE_URL`` chose the database (None otherwise).
    """
    lines = [f"database: {masked_url(url)}"]
    if (
        data_dir is not None
        and data_dir.resolve() == DEFAULT_DATA_DIR.resolve()
        and not (data_dir / _SQLITE_FILE).exists()
        and (DEMO_DATA_DIR / _SQLITE_FILE).exists()
    ):
        lines.append(
            f"note: {DEFAULT_DATA_DIR} holds no database yet (one is created); the demo's "
            f"data is in {DEMO_DATA_DIR}: set TOLLWAY_DATA_DIR={DEMO_DATA_DIR} to use it"
        )
    return lines


def sqlite_url(data_dir: Path) -> str:
    """The embedded default: ``tollway.db`` under ``data_dir`` (created if missing)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{(data_dir / _SQLITE_FILE).resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (usage queries, key lookups) run while the ledger writer commits;
    # FULL keeps a committed ledger batch on disk through a power loss.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_engine(
    url: str, *, schema: str | None = None, connect_timeout_s: float = 5.0, **kwargs: Any
) -> AsyncEngine:
    """An async engine for ``url``.

    ``schema`` sets PostgreSQL's ``search_path`` (tests use a schema per test).
    SQLite connections use WAL and a busy timeout, so writers wait rather than fail.
    """
    if url.startswith("postgresql"):
        connect_args: dict[str, Any] = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", connect_timeout_s)
        if schema:
            connect_args["server_settings"] = {"search_path": schema}
        kwargs["connect_args"] = connect_args
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_timeout", connect_timeout_s)
    elif url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 10})
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine
