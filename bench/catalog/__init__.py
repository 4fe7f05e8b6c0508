"""What the catalog path adds over the pool path, for the same upstream.

1. Start the canned upstream (``bench.upstream``) pinned to core 1; pin this
   process to core 0.
2. Build two catalog backends for it (``direct_openai`` and ``litellm``
   transports) and the pool path's plain aiohttp POST (the baseline); check that
   each backend's stream ends with a usage chunk and ``[DONE]``.
3. Round after round (order alternating), for non-streaming and streaming
   requests, time ``--requests`` sequential calls per path (p50/p99), then the
   same count from ``--workers`` concurrent callers (req/s). All in one
   process, so the figures are what each path costs the gateway's event loop.
4. Print medians over rounds with the added latency and ratios against the
   baseline of the same run; ``--write`` records them in ``RESULTS.md``.

    python -m bench.catalog [--requests 400] [--rounds 3] [--workers 16] [--write]
"""
