"""Benchmark scripts for the gateway's hot path.

These are scripts, not tests: each entry point (``python -m bench.<name>``) pins its
processes to cores, repeats every measurement, and prints medians plus ratios against
a baseline measured in the same run. See ``docs/benchmarks.md`` for the method and the
recorded results.

Modules:

- ``upstream``: a canned, very fast OpenAI-compatible upstream (raw asyncio protocol).
- ``loadgen``: runs ``wrk`` (preferred) or a Python keep-alive load generator.
- ``processes``: starts pinned child processes and always stops them.
- ``machine``: describes the machine and package versions for the record.
- ``http_clients``: aiohttp against httpx as the gateway's upstream client.
- ``servers``: uvicorn (uvloop + httptools) against granian for the ASGI server
  (``server_app`` is the route both serve).
- ``gateway_overhead``: latency and throughput added by the gateway.
"""
