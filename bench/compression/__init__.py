"""Benchmark of the context-compression policies (``python -m bench.compression``).

Token reduction, validity, retention of recent tool results, prefix stability
between consecutive turns, latency at 32K and 128K tokens, and the cached-token
share an emulated SGLang worker reports, on the tau-bench airline trajectories
(``../shared/datasets/tau-bench/``) and BFCL multi-turn data when the
``bfcl-eval`` package is installed.
"""
