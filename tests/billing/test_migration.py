"""The Alembic migration creates exactly the tables ``billing.tables`` declares."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import billing.migrations
from billing.tables import metadata

ENV_PY = """
from alembic import context
from sqlalchemy import create_engine

url = context.config.get_main_option("sqlalchemy.url")
with create_engine(url).connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""


def test_migration_matches_metadata_and_downgrades(tmp_path: Path) -> None:
    scripts = tmp_path / "alembic"
    scripts.mkdir()
    (scripts / "env.py").write_text(ENV_PY)
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(Path(billing.migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "billing@head")

    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        for table in metadata.sorted_tables:
            columns = {c["name"]: c for c in inspector.get_columns(table.name)}
            assert list(columns) == [c.name for c in table.columns], table.name
            for column in table.columns:
                assert columns[column.name]["nullable"] == column.nullable, column.name
            indexes = {i["name"] for i in inspector.get_indexes(table.name)}
            assert indexes == {i.name for i in table.indexes}
        command.downgrade(config, "base")
        assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
