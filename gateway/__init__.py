"""The gateway: what a client talks to.

Owns: the ASGI app (:mod:`gateway.app`, its parts in :mod:`gateway.services`),
its HTTP protocol (:mod:`gateway.protocol`), the one request path
(:mod:`gateway.routes` -> :mod:`gateway.dispatch` -> :mod:`gateway.pipeline`),
configuration (:mod:`gateway.config`, :mod:`gateway.settings`), tenancy and keys,
limits and budgets, idempotency, metering on the request path, the admin and
usage APIs, and the gateway's own CLI commands.

May import: :mod:`tollway`, :mod:`policies`, :mod:`backends`, :mod:`billing` and
:mod:`gpu_catalog`. Never :mod:`simulator` and never :mod:`tollway.cli` (the
command line is composed there, above the gateway). ``tests/test_import_rules.py``
checks this.
"""
