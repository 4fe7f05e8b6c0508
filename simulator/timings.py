"""The API timings of SGLang 0.5.6.post1 that the emulator copies, in wall-clock seconds.

Each default is SGLang's, from the source the field names:

* ``health_wait_s`` — ``http_server.py`` ``health_generate``: ``/health`` and
  ``/health_generate`` submit a one-token generation, then ``await
  asyncio.sleep(1)`` before they look for scheduler output, so no answer comes
  sooner than 1 s.
* ``health_generation`` — ``environ.py`` ``SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION``
  (default true); false makes ``/health`` (not ``/health_generate``) answer 200 at once.
* ``startup_s`` — ``tokenizer_manager.py`` starts in ``ServerStatus.Starting``
  and health answers 503 until the warm-up request finished
  (``http_server.py`` ``_execute_server_warmup``). Loading a model takes
  minutes on a GPU; the emulator's default is no wait, ``--startup-s`` sets one.
* ``stream_abort_delay_s`` — ``tokenizer_manager.py`` ``create_abort_task``:
  the background task of a streamed response sleeps 2 s, then aborts the
  request; a stream whose client left keeps generating until then.
* ``wait_timeout_s`` — ``tokenizer_manager.py`` ``_wait_one_response``:
  ``asyncio.wait_for(state.event.wait(), timeout=4)``; a non-streamed request
  checks its client when no output came for 4 s ...
* ``force_output_interval`` — ... and at each output, which the scheduler sends a
  non-streamed request every 50 tokens
  (``scheduler_output_processor_mixin.py`` ``DEFAULT_FORCE_STREAM_INTERVAL``).

Tests that do not test these timings may shorten them; the defaults are what
``tollway emulate`` and the gateway's tests against it run with.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ApiTimings:
    """SGLang's health, start-up and disconnect timings (see the module docstring)."""

    health_wait_s: float = 1.0
    health_generation: bool = True
    startup_s: float = 0.0
    stream_abort_delay_s: float = 2.0
    wait_timeout_s: float = 4.0
    force_output_interval: int = 50

    def __post_init__(self) -> None:
        for name in ("health_wait_s", "startup_s", "stream_abort_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.wait_timeout_s <= 0:
            raise ValueError("wait_timeout_s must be > 0")
        if self.force_output_interval < 1:
            raise ValueError("force_output_interval must be >= 1")
