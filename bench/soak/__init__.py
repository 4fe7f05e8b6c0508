"""Memory soak: a million agent-session requests through the full stack.

``python -m bench.soak`` starts emulated SGLang workers, the gateway with every
feature on (tenancy keys in PostgreSQL, limits, budgets and the usage stream in
Redis, the ledger writer, cache-aware routing, compression, idempotency) and
drives ``--requests`` requests over ``--sessions`` sessions whose contexts grow
turn by turn (capped), sampling the gateway's resident memory every second. It
reports RSS at the end of warm-up, at the end and at its peak, the growth between
the two, requests/s, errors and whether the ledger holds every request, and
fails (exit 1) when memory grew by more than 5 % after warm-up or any request
failed. ``--debug-memory`` runs the gateway under tracemalloc and reports what
grew. All traffic stays on 127.0.0.1; the run is bounded in requests and time,
and every process, database and Redis key it made is removed at the end.
"""
