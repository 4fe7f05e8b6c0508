"""Emulator configuration: what GPU and model to pretend to be, how fast, which faults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gpu_catalog.steptime import DEFAULT_TUNING, PerfTuning
from simulator.errors import ErrorStyle
from simulator.timings import ApiTimings


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Injected misbehaviour (not an SGLang feature; see ``POST /_emulator/faults``).

    * ``error_rate``: fraction of model requests answered ``500`` in SGLang's shape.
    * ``added_latency_ms``: wall-clock delay before each model request is handled.
    * ``hang``: accept model requests and never answer.
    * ``die_after``: after this many model requests have been answered the worker
      dies (the CLI server exits the process; an in-process app stops answering).
    * ``cut_stream_after``: a stream is cut (connection dropped, no ``[DONE]``)
      after this many chunks.
    """

    error_rate: float = 0.0
    added_latency_ms: float = 0.0
    hang: bool = False
    die_after: int | None = None
    cut_stream_after: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")
        if self.added_latency_ms < 0:
            raise ValueError("added_latency_ms must be >= 0")
        if self.die_after is not None and self.die_after < 0:
            raise ValueError("die_after must be >= 0")
        if self.cut_stream_after is not None and self.cut_stream_after < 0:
            raise ValueError("cut_stream_after must be >= 0")


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Everything one emulated SGLang worker needs.

    ``mem_fraction_static``, ``max_running_requests`` and ``chunked_prefill_size``
    default to SGLang's own choices for the GPU (see
    :mod:`gpu_catalog.server_defaults`; a chunk size of 0 or less disables
    chunked prefill, as ``--chunked-prefill-size -1`` does). ``enable_mixed_chunk``
    is SGLang's ``--enable-mixed-chunk`` (off by default there too).
    ``max_total_tokens`` overrides the KV pool the capacity model computes (as
    SGLang's ``--max-total-tokens`` caps it; here it may also raise it, so tests
    can use tiny or huge pools). ``speed`` runs model time that many times faster
    than wall time; ``instant`` answers at once while still accounting every
    latency on a virtual clock. ``on_die`` is what ``die_after`` calls (the CLI
    passes a real process exit); ``None`` makes the app stop answering instead.
    ``timings`` are SGLang's API timings (health wait, disconnect aborts).
    ``embedding`` makes it an embedding worker (SGLang's ``--is-embedding``: it answers
    ``/v1/embeddings`` and refuses to generate), with vectors of ``dimensions``
    (default: the model's hidden size).
    """

    gpu: str = "h100"
    model: str = "llama-3.1-8b-instruct"
    tp: int = 1
    weights_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    served_model_name: str | None = None
    max_total_tokens: int | None = None
    mem_fraction_static: float | None = None
    max_running_requests: int | None = None
    max_prefill_tokens: int = 16384
    chunked_prefill_size: int | None = None
    enable_mixed_chunk: bool = False
    context_length: int | None = None
    speed: float = 1.0
    instant: bool = False
    host: str = "127.0.0.1"
    port: int = 30000
    seed: int = 0
    enable_cache_report: bool = True
    error_style: ErrorStyle = "sglang"
    min_output_tokens: int = 8
    max_output_tokens: int = 64
    tuning: PerfTuning = DEFAULT_TUNING
    faults: FaultConfig = field(default_factory=FaultConfig)
    timings: ApiTimings = field(default_factory=ApiTimings)
    on_die: Callable[[], None] | None = None
    embedding: bool = False
    dimensions: int | None = None

    def __post_init__(self) -> None:
        if self.dimensions is not None and self.dimensions < 1:
            raise ValueError("dimensions must be >= 1")
