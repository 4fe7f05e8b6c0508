"""The SQL database: engine construction and schema migrations (Alembic).

``DATABASE_URL`` selects PostgreSQL in production (``postgresql+asyncpg://…``);
unset, the embedded default is a SQLite file under the data directory. Both
run the same Alembic migrations, which :func:`migrate` applies at start (under
a PostgreSQL advisory lock, so replicas starting together do not race).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.database import create_engine, sqlite_url
from tollway.errors import ServiceUnavailable

__all__ = ["create_engine", "default_database_url", "migrate", "translate_db_errors"]

_MIGRATION_LOCK_ID = 7_115_003_401


def default_database_url(data_dir: Path) -> str:
    """The embedded default: a SQLite file under ``data_dir``."""
    return sqlite_url(data_dir)


@contextmanager
def translate_db_errors(what: str) -> Iterator[None]:
    """Translate SQLAlchemy and driver errors raised inside into Tollway's errors."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise ServiceUnavailable(
            f"database unavailable while {what}", code="database_error"
        ) from exc
    except OSError as exc:
        raise ServiceUnavailable(
            f"database unreachable while {what}", code="database_error"
        ) from exc


def _version_locations() -> list[str]:
    import importlib

    import gateway.migrations

    locations = [str(Path(next(iter(gateway.migrations.__path__))) / "versions")]
    try:
        billing_migrations = importlib.import_module("billing.migrations")
    except ImportError:  # pragma: no cover - billing migrations not present
        return locations
    locations.extend(p for p in billing_migrations.__path__ if any(Path(p).glob("*.py")))
    return locations


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "gateway:migrations")
    cfg.set_main_option("path_separator", "os")
    import os

    cfg.set_main_option("version_locations", os.pathsep.join(_version_locations()))
    cfg.attributes["connection"] = connection
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT pg_advisory_lock({_MIGRATION_LOCK_ID})"))
        try:
            command.upgrade(cfg, "heads")
        finally:
            connection.execute(text(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK_ID})"))
    else:
        command.upgrade(cfg, "heads")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the database schema up to date (every migration branch)."""
    with translate_db_errors("migrating the schema"):
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
