"""The versioned SQL schema of every package, and the one way to bring a database up to it.

Each package keeps its Alembic migrations in a branch of its own (``tenancy`` in
``gateway/migrations/versions``, ``billing`` in ``billing/migrations``); one
``alembic_version`` table records both. Every entry point that opens the database
(``tollway serve``, ``tollway billing worker``, ``tollway pricing|usage``, the
tenants and keys commands, ``tollway db upgrade``) calls :func:`migrate` first, so a
database created by any of them is versioned and the others find it so.

Processes that start together on a fresh database (replicas, the gateway and the
ledger writer) migrate one at a time:

- PostgreSQL: ``pg_advisory_xact_lock`` (keyed per schema) is the migrating
  transaction's first statement; it is released when that transaction commits, so
  the next process sees the finished schema and its recorded version.
- SQLite: an exclusive ``flock`` on ``<database file>.migrate-lock`` is held around
  the whole upgrade.

A database whose tables an older release created without recording a version (its
``tollway pricing`` and ``tollway usage`` did) is *adopted*: when every table of a
branch's first revision exists and that branch has no recorded version, the revision
is recorded (``alembic stamp``) and the later ones run as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import logging
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.database import masked_url
from tollway.errors import ServiceUnavailable

log = logging.getLogger("tollway.database")

#: Packages whose migrations make up the schema; a package's ``versions`` folder holds
#: them when it has one, else the package folder itself. A package may declare
#: ``BASELINE = (revision, tables)``: the first revision and the tables it creates, for
#: adopting databases created before versioning.
MIGRATION_PACKAGES = ("gateway.migrations", "billing.migrations")

#: First key of PostgreSQL's two-key advisory lock (the second: the schema's hash).
_LOCK_KEY = 0x746F6C6C  # "toll"


def _packages() -> list[Any]:
    modules = []
    for name in MIGRATION_PACKAGES:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:  # pragma: no cover - a package left out of an install
            continue
    return modules


def _version_locations(packages: Iterable[Any]) -> list[str]:
    locations = []
    for package in packages:
        for folder in map(Path, package.__path__):
            versions = folder / "versions"
            locations.append(str(versions if versions.is_dir() else folder))
    return locations


def head_revisions() -> set[str]:
    """The newest revision of every migration branch: what a migrated database records."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(_config(None)).get_heads())


def _config(connection: Connection | None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "tollway:migrations")
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(_version_locations(_packages())))
    cfg.attributes["connection"] = connection
    return cfg


def _adopt_unversioned(connection: Connection, cfg: Any) -> None:
    """Record the first revision of branches whose tables exist without a version."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    tables = set(sa.inspect(connection).get_table_names())
    script = ScriptDirectory.from_config(cfg)
    heads = MigrationContext.configure(connection).get_current_heads()
    applied = {rev.revision for rev in script.iterate_revisions(heads, "base") if rev}
    for package in _packages():
        baseline = getattr(package, "BASELINE", None)
        if baseline is None:
            continue
        revision, needed = baseline
        if revision not in applied and set(needed) <= tables:
            log.warning(
                "the database has the tables of migration %s without a recorded version; "
                "recording it",
                revision,
            )
            command.stamp(cfg, revision)


def _upgrade(connection: Connection) -> None:
    from alembic import command

    if connection.dialect.name == "postgresql":
        # Held until this transaction commits: the next migrator sees the result.
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key, hashtext(coalesce(current_schema(), '')))"),
            {"key": _LOCK_KEY},
        )
    cfg = _config(connection)
    _adopt_unversioned(connection, cfg)
    command.upgrade(cfg, "heads")


def _lock_path(engine: AsyncEngine) -> Path | None:
    """The SQLite lock file next to the database file (None for memory databases)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database + ".migrate-lock")


@contextlib.asynccontextmanager
async def _file_lock(path: Path | None) -> AsyncIterator[None]:
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


async def migrate(engine: AsyncEngine) -> None:
    """Bring the database schema up to date (every package's branch), one process at
    a time; raises :class:`~tollway.errors.ServiceUnavailable` when the database fails."""
    what = "database unavailable while migrating the schema"
    try:
        async with _file_lock(_lock_path(engine)):
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade)
    except (SQLAlchemyError, OSError) as exc:
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ServiceUnavailable(f"{what}: {cause}", code="database_error") from exc
    log.info("database %s: schema up to date", masked_url(engine.url))
