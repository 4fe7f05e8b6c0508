"""The billing database: ``DATABASE_URL``, else the embedded SQLite file.

The settings it is chosen by (the data directory and ``DATABASE_URL``) are read
from the environment in one place, above this package, and passed in as
:class:`Stores`. Engines come from :func:`tollway.database.create_engine`, shared
with the gateway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tollway.database import DEFAULT_DATA_DIR, create_engine, sqlite_url

__all__ = ["DEFAULT_DATA_DIR", "Stores", "create_engine", "database_url"]


class Stores(Protocol):
    """The settings the billing commands read: where local state lives and which
    shared stores to use (``None``: SQLite under :attr:`data_dir`, no Redis)."""

    @property
    def data_dir(self) -> Path:
        """The data directory (``TOLLWAY_DATA_DIR``, default ``.tollway``)."""
        ...

    @property
    def database_url(self) -> str | None:
        """``DATABASE_URL``."""
        ...

    @property
    def redis_url(self) -> str | None:
        """``REDIS_URL``."""
        ...


def database_url(stores: Stores) -> str:
    """``stores.database_url``, else a SQLite file ``tollway.db`` in the data directory."""
    return stores.database_url or sqlite_url(stores.data_dir)
