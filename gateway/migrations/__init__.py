"""Alembic migrations of the whole database (tenancy here; billing in its own branch)."""
