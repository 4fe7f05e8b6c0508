"""Capacity planning: sizing from first principles and a discrete-event simulator.

* :mod:`simulator.planner.sizing` - weights, KV bytes, SGLang's KV pool and the
  concurrency ceilings for one deployment (``tollway capacity``).
* :mod:`simulator.planner.schema` - the workload and pool YAML files (strict).
* :mod:`simulator.planner.sessions` - agent sessions, their contexts and compression.
* :mod:`simulator.planner.des` - the discrete-event simulation of agent sessions
  on pools (:mod:`simulator.planner.workers`) of emulated SGLang workers
  (``tollway plan``); :mod:`simulator.planner.results` - what it measures.
* :mod:`simulator.planner.search` - the cheapest pool mix that meets the targets.
* :mod:`simulator.planner.calibration` - the model against published offline
  throughput figures; :mod:`simulator.planner.latency` - against published
  closed-loop latency tables; :mod:`simulator.planner.published` - the figures.
* :mod:`simulator.planner.render`, :mod:`simulator.planner.charts`,
  :mod:`simulator.planner.runner` - tables, PNG charts, the ``plan`` command's flow.

Everything here runs in simulated time: no sleeps, no I/O besides reading the
input files, deterministic for a seed.
"""
