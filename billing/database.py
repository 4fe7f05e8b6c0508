"""The billing database's URL: ``DATABASE_URL``, else the embedded SQLite file.

Engines come from :func:`tollway.database.create_engine`, shared with the gateway.
"""

from __future__ import annotations

import os
from pathlib import Path

from tollway.database import DEFAULT_DATA_DIR, create_engine, sqlite_url

__all__ = ["DEFAULT_DATA_DIR", "create_engine", "data_dir", "default_database_url"]


def data_dir() -> Path:
    """``TOLLWAY_DATA_DIR`` (default ``.tollway``)."""
    return Path(os.environ.get("TOLLWAY_DATA_DIR", str(DEFAULT_DATA_DIR)))


def database_url_from_env() -> str | None:
    """``DATABASE_URL`` when set (else the SQLite file under :func:`data_dir`)."""
    return os.environ.get("DATABASE_URL") or None


def default_database_url(directory: Path | None = None) -> str:
    """``DATABASE_URL``, else a SQLite file ``tollway.db`` in the data directory.

    The data directory is ``TOLLWAY_DATA_DIR`` (default ``.tollway``).
    """
    return database_url_from_env() or sqlite_url(directory or data_dir())
