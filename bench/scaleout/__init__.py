"""Multi-core scale-out: requests/s with one and two gateway processes; exact limits.

``python -m bench.scaleout`` starts one stack (canned SGLang-shaped workers, Redis,
a fresh PostgreSQL database) and three gateway deployments with every feature on:
one process, ``serve --workers 2`` (two processes sharing the listening socket),
and two replicas on two ports sharing Redis. It loads them in turns with agent
sessions and reports requests/s, the CPU time each process (gateway, generator,
workers, Redis, PostgreSQL) spent per request, and the scaling efficiency; then,
for each deployment, it sends a burst of requests with one key limited to R
requests per minute through all of its processes at once and checks that exactly
R succeed and the rest get 429. All traffic stays on 127.0.0.1; every phase is
bounded in time; every process, database and Redis key it made is removed.
"""
