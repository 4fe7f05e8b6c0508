"""Backends: the :class:`backends.base.Backend` interface and what implements it.

Owns: the SGLang pools (:mod:`backends.sglang`: workers, health checks, KV
admission, picking, circuit breakers, transport, manifests), the hosted-provider
catalog (:mod:`backends.catalog`), the HTTP/1.1 client every pool uses for
requests and probes (:mod:`backends.http1`), upstream retries
(:mod:`backends.retry`) and the one table that turns an upstream's HTTP status
into a Tollway error (:mod:`backends.upstream_errors`).

May import: :mod:`tollway` and :mod:`gpu_catalog` (the GPU/model catalog and the
capacity model, shared with the simulator); never :mod:`gateway`,
:mod:`billing`, :mod:`policies` or :mod:`simulator` (``tests/test_import_rules.py``
checks this).
"""
