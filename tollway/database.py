"""SQL engines for every package: SQLite by default, PostgreSQL in production.

The one place engine settings live, so the tenancy store and the usage ledger
open their databases the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def sqlite_url(data_dir: Path) -> str:
    """The embedded default: ``tollway.db`` under ``data_dir`` (created if missing)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{(data_dir / 'tollway.db').resolve()}"


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
