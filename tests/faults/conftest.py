"""Fixtures of the fault suite: a fresh PostgreSQL database for processes to share."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import admin_sql


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A fresh database on the shared PostgreSQL (dropped after): processes started by
    a test share it by URL (a schema cannot be named in one)."""
    name = f"tollway_faults_{uuid.uuid4().hex[:10]}"
    admin_sql(postgres_url, f'CREATE DATABASE "{name}"')
    try:
        yield f"{postgres_url.rsplit('/', 1)[0]}/{name}"
    finally:
        admin_sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_database_of_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A fresh database owned by a login role of its own: ``(URL as that role, role)``.

    Taking the role's login away (and ending its sessions) makes the database
    unavailable to the processes using the URL, and only to them.
    """
    suffix = uuid.uuid4().hex[:10]
    role, name = f"tollway_faults_r{suffix}", f"tollway_faults_{suffix}"
    admin_sql(
        postgres_url, f'CREATE ROLE "{role}" LOGIN', f'CREATE DATABASE "{name}" OWNER "{role}"'
    )
    host = postgres_url.split("@", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"postgresql+asyncpg://{role}@{host}/{name}", role
    finally:
        admin_sql(
            postgres_url,
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            f'DROP ROLE IF EXISTS "{role}"',
        )
