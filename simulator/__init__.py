"""The simulator: SGLang without a GPU, and capacity planning.

Owns: the SGLang-compatible worker emulator (``tollway emulate``:
:mod:`simulator.app`, its engine, scheduler, radix cache and tokenizer), which
every test, the demo and every benchmark run against, and the capacity planner
(:mod:`simulator.planner`: ``tollway capacity`` and ``tollway plan``).

May import: :mod:`tollway` and :mod:`gpu_catalog` (the one performance model it
shares with the pools). Listed exceptions in ``tests/test_import_rules.py``: the
planner replays the pools' own picking, KV admission and worker state
(:mod:`backends.sglang`) so a plan routes as the gateway does, and the
emulator's tokenizer loads the BPE files through :mod:`policies.encodings`.
Never :mod:`gateway`.
"""
