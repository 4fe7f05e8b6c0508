"""Alembic versions of the billing tables (branch label ``billing``).

:func:`tollway.schema.migrate` runs them with every other package's, as every
entry point does at start (``tollway db upgrade`` on its own).
"""

#: The first revision and the tables it creates: a database that has these tables and
#: no recorded billing version (made by an older ``tollway pricing``) is adopted.
BASELINE = ("b1_0001", ("usage_ledger", "price_books", "billing_export_batches"))
