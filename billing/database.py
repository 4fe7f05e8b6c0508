"""The billing database's URL: ``DATABASE_URL``, else the embedded SQLite file.

Engines come from :func:`tollway.database.create_engine`, shared with the gateway.
"""

from __future__ import annotations

import os
from pathlib import Path

from tollway.database import create_engine, sqlite_url

DEFAULT_DATA_DIR = Path(".tollway")

__all__ = ["DEFAULT_DATA_DIR", "create_engine", "default_database_url"]


def default_database_url(data_dir: Path | None = None) -> str:
    """``DATABASE_URL``, else a SQLite file ``tollway.db`` in the data directory.

    The data directory is ``TOLLWAY_DATA_DIR`` (default ``.tollway``).
    """
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    return sqlite_url(data_dir or Path(os.environ.get("TOLLWAY_DATA_DIR", str(DEFAULT_DATA_DIR))))
