"""The gateway: the ASGI app, its HTTP protocol, configuration, the request pipeline,
tenancy, limits, idempotency, metering, and the gateway's own CLI commands.

May import: :mod:`tollway`, :mod:`policies`, :mod:`backends` and :mod:`billing`.
Never :mod:`simulator` and never :mod:`tollway.cli` (the command line is composed
there, above the gateway). ``tests/test_import_rules.py`` checks this.
"""
