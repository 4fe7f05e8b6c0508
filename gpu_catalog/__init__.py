"""The GPU and model catalog and the performance model computed from it.

Owns: the specs of the GPUs and models Tollway knows (:mod:`gpu_catalog.specs`),
the memory model (weights, KV-pool size, what fits: :mod:`gpu_catalog.capacity`),
the step-time model (:mod:`gpu_catalog.steptime`) and SGLang 0.5.6's launch
defaults (:mod:`gpu_catalog.server_defaults`). Pure functions and frozen data:
no I/O, no state.

Imported by ``backends`` (a pool's modelled KV capacity, manifests, launch
arguments) and by ``simulator`` (the emulator's engine and the capacity
planner), so both compute from one model.

May import: ``tollway`` only (today: nothing of ours).
"""
