"""The per-app worker state every route handler reads, and small shared helpers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from simulator.config import EmulatorConfig
from simulator.engine import Engine, GenerationHandle
from simulator.errors import EmulatorError, bad_request, error_body, internal_error
from simulator.faults import Faults
from simulator.metrics import EmulatorMetrics
from simulator.tokenizer import Tokenizer


@dataclass(eq=False)
class WorkerState:
    """Everything one emulated worker owns; built by ``create_emulator_app``."""

    config: EmulatorConfig
    engine: Engine
    metrics: EmulatorMetrics
    faults: Faults
    served_model_name: str
    started_at: int = field(default_factory=lambda: int(time.time()))
    #: ``time.monotonic()`` when the worker leaves SGLang's ``ServerStatus.Starting``.
    up_at: float = 0.0

    def __post_init__(self) -> None:
        self.up_at = time.monotonic() + self.config.timings.startup_s

    @property
    def tokenizer(self) -> Tokenizer:
        """The worker's tokenizer."""
        return self.engine.tokenizer

    @property
    def embedding_dimensions(self) -> int:
        """The size of this worker's embeddings (``--dimensions``, else the hidden size)."""
        return self.config.dimensions or self.engine.model.hidden_size

    @property
    def starting(self) -> bool:
        """Still "loading": SGLang's health answers 503 until its warm-up finished."""
        return time.monotonic() < self.up_at

    def abort_later(self, handles: Sequence[GenerationHandle]) -> None:
        """Abort ``handles`` after SGLang's delay for a stream that ended.

        ``tokenizer_manager.py`` ``create_abort_task`` is the background task of
        every streamed response: ``asyncio.sleep(2)``, then abort. A stream
        whose client left keeps generating (and holding KV) until then; one
        that finished is not affected.
        """
        if all(h.seq.finished for h in handles):
            return
        delay = self.config.timings.stream_abort_delay_s
        if delay <= 0:
            self._abort(handles)
            return
        asyncio.get_running_loop().call_later(delay, self._abort, handles)

    def _abort(self, handles: Sequence[GenerationHandle]) -> None:
        for handle in handles:
            self.engine.abort(handle)

    async def gate(self) -> None:
        """Apply the request-level faults before a model request is handled."""
        faults = self.faults
        limit = faults.config.die_after
        if faults.dead or (limit is not None and faults.answered >= limit):
            faults.dead = True
            await hang_forever()
        if faults.config.added_latency_ms > 0:
            await asyncio.sleep(faults.config.added_latency_ms / 1000)
        if faults.config.hang:
            await hang_forever()
        if faults.should_fail():
            raise internal_error("Internal server error: injected fault (emulator error_rate).")

    def json(self, payload: Any, status: int = 200, *, answered: bool = False) -> Response:
        """A JSON response; ``answered`` counts it toward ``die_after`` once sent."""
        background = BackgroundTask(self._answered) if answered else None
        return Response(
            orjson.dumps(payload),
            status_code=status,
            media_type="application/json",
            background=background,
        )

    async def _answered(self) -> None:
        # Async so Starlette runs it on the event loop (``on_die`` may need the loop).
        self.faults.request_answered()

    def error(self, error: EmulatorError) -> Response:
        """An error response in SGLang's shape."""
        return self.json(error_body(error, self.config.error_style), error.status)


def worker(request: Request) -> WorkerState:
    """The :class:`WorkerState` of the app serving ``request``."""
    state: WorkerState = request.app.state.worker
    return state


async def hang_forever() -> None:
    """Never return (until cancelled)."""
    await asyncio.Event().wait()


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def usage_dict(
    prompt_tokens: int, completion_tokens: int, cached_tokens: int, *, cache_report: bool
) -> dict[str, Any]:
    """SGLang's ``UsageInfo``; ``prompt_tokens_details`` only when tokens were cached."""
    details = {"cached_tokens": cached_tokens} if cache_report and cached_tokens > 0 else None
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": details,
        "reasoning_tokens": 0,
    }


def int_field(
    body: Mapping[str, Any], name: str, default: int | None, *, minimum: int = 1
) -> int | None:
    """An optional integer field, validated (400 when not an integer >= ``minimum``)."""
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_request(f"{name} must be an integer >= {minimum}", param=name)
    return value


def stop_list(value: Any) -> tuple[str, ...]:
    """Normalise an OpenAI ``stop`` value (string, list or null)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise bad_request("stop must be a string or a list of strings", param="stop")
