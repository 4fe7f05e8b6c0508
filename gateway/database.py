"""The SQL database: engine construction and schema migrations (Alembic).

``DATABASE_URL`` selects PostgreSQL in production (``postgresql+asyncpg://…``);
unset, the embedded default is a SQLite file under the data directory. Both
run the same Alembic migrations, which :func:`migrate` (:mod:`tollway.schema`)
applies at start, one process at a time (replicas and the ledger writer starting
together do not race).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from tollway.database import create_engine, sqlite_url
from tollway.errors import ServiceUnavailable
from tollway.schema import migrate

__all__ = ["create_engine", "default_database_url", "migrate", "translate_db_errors"]


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
