"""Billing: usage records, GPU-second shares, price books, the durable ledger, Stripe.

Owns: the usage record and its cost, price books, the usage buffer (Redis stream
or local spool), the journal, the SQL ledger and its writer, reconciliation, the
Stripe export and the billing commands.

The request path builds a :class:`billing.usage.UsageRecord`, prices it
(:func:`billing.cost.with_cost`) and makes it durable in a
:class:`billing.buffer.UsageBuffer` (Redis stream, else a local spool); a
:class:`billing.writer.LedgerWriter` moves it into the SQL ledger exactly once.
Its commands are given the data directory and the stores' URLs
(:class:`billing.database.Stores`), read in one place above this package.

May import: :mod:`tollway` only; never :mod:`gateway`, :mod:`backends`,
:mod:`policies` or :mod:`simulator` (``tests/test_import_rules.py`` checks this).
"""
