"""Routing benchmark: prefix-cache hit rate, TTFT and throughput per worker-selection policy.

Multi-turn agent sessions (tau-bench airline trajectories, and a synthetic
tool loop with long tool outputs) are replayed concurrently, streaming,
against emulated H100 workers whose KV pools are too small for the whole
working set, through Tollway with each policy (``round_robin``,
``least_load``, ``cache_aware`` with and without ``X-Session-Id``) and
through SGLang's own router (``sglang-router``, ``--policy cache_aware``),
with one frontend and with two behind a client-side round robin. The hit
rate is token-weighted, from the workers' ``sglang:cached_tokens_total`` /
``sglang:prompt_tokens_total`` deltas; the caches are flushed before each run.
"""
