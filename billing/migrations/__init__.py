"""Alembic versions of the billing tables (branch label ``billing``).

Add this directory to ``version_locations`` of the project's Alembic environment
and upgrade with ``alembic upgrade billing@head`` (or ``heads``).
"""
