"""Cost of the admission engine (rate limits, concurrency, budgets) per request.

``python -m bench.limits [--requests 4000] [--rounds 3] [--concurrency 64] [--write]``
measures, in one process on uvloop against the local Redis, admit alone (the
request path's share) and admit + settle, for: the no-limit fast path (the
baseline: zero Redis calls), the in-process engine, and the Redis engine with
rate limits only and with every limit and budget; plus a bare Redis ``PING``
(the floor of one round trip) and the throughput at a given concurrency.
``--write`` puts the table into ``bench/limits/RESULTS.md``.
"""
