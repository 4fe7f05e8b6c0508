"""The Alembic environment every package's migrations run in (see :mod:`tollway.schema`)."""
