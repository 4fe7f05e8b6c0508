"""Benchmarks of the usage ledger: SQL ingest and the request-path durability cost."""
