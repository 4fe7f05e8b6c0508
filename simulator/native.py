"""SGLang's native routes: ``/generate``, health, server and model info, load, cache, metrics.

Also the emulator's own ``/_emulator/faults`` (not an SGLang route).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from simulator.engine import GenerationHandle
from simulator.errors import EmulatorError, GenerationError, bad_request, check_context_length
from simulator.generation import GenerationRequest, OutputPlan, plan_output
from simulator.replies import error_stream, wait_all
from simulator.scheduler import AdmissionError
from simulator.sse import DONE, SSEResponse, sse_event
from simulator.state import WorkerState, read_json, stop_list, worker

#: The SGLang release the emulator follows (``infra/pool/Dockerfile`` pins it).
SGLANG_VERSION = "0.5.6.post1"

log = logging.getLogger(__name__)


def _native_error(state: WorkerState, error: EmulatorError) -> Response:
    # SGLang's /generate answers errors as {"error": {"message": ...}}.
    return state.json({"error": {"message": error.message}}, error.status)


def _finish_reason(plan: OutputPlan, max_new_tokens: int) -> dict[str, Any]:
    if plan.finish_reason == "length":
        return {"type": "length", "length": max_new_tokens}
    return {"type": "stop", "matched": plan.matched_stop}


def _meta(
    state: WorkerState, rid: str, handle: GenerationHandle, max_new: int, *, done: bool
) -> dict[str, Any]:
    seq = handle.seq
    return {
        "id": rid,
        "finish_reason": _finish_reason(handle.plan, max_new) if done else None,
        "prompt_tokens": len(seq.prompt_ids),
        "weight_version": "default",
        "completion_tokens": seq.generated,
        "cached_tokens": seq.cached_tokens,
        "e2e_latency": round(state.engine.clock.now() - seq.arrival_time, 6),
    }


async def generate(request: Request) -> Response:
    """Handle ``POST /generate`` (``text`` or ``input_ids``, ``sampling_params``, ``stream``)."""
    state = worker(request)
    try:
        body = await read_json(request)
        await state.gate()
        params = body.get("sampling_params") or {}
        if not isinstance(params, Mapping):
            raise bad_request("sampling_params must be an object")
        if body.get("input_ids") is not None:
            ids = body["input_ids"]
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                raise bad_request("input_ids must be a list of token ids")
            prompt_ids = tuple(ids)
        elif isinstance(body.get("text"), str):
            prompt_ids = tuple(state.tokenizer.encode(body["text"]))
        else:
            raise bad_request("Either text or input_ids should be provided.")
        max_new = params.get("max_new_tokens", 128)
        if not isinstance(max_new, int) or max_new < 0:
            raise bad_request("max_new_tokens must be a non-negative integer")
        max_new = max(1, max_new)
        schema = params.get("json_schema")
        plan = plan_output(
            GenerationRequest(
                prompt_ids=prompt_ids,
                max_tokens=max_new,
                seed=state.config.seed * 1_000_003 + int(params.get("sampling_seed") or 0),
                stop=stop_list(params.get("stop")),
                ignore_eos=bool(params.get("ignore_eos", False)),
                json_mode=schema is not None,
                min_natural_tokens=state.config.min_output_tokens,
                max_natural_tokens=state.config.max_output_tokens,
            ),
            state.tokenizer,
        )
        rid = str(body.get("rid") or uuid.uuid4().hex)
    except EmulatorError as exc:
        if exc.status >= 500:
            return state.error(exc)
        return _native_error(state, exc)
    try:
        requested = params.get("max_new_tokens")
        check_context_length(state.engine.context_length, len(prompt_ids), requested)
        cap = requested if isinstance(requested, int) else None
        handle = state.engine.submit(rid, prompt_ids, plan, max_new_tokens=cap)
    except (GenerationError, AdmissionError) as exc:
        if body.get("stream"):
            # http_server.py generate_request: {"error": {"message": ...}}, then [DONE].
            return error_stream(state, sse_event({"error": {"message": str(exc)}}))
        return _native_error(state, bad_request(str(exc)))
    if body.get("stream"):
        return SSEResponse(
            _stream_generate(state, rid, handle, max_new),
            cut_after=state.faults.config.cut_stream_after,
            on_complete=state.faults.request_answered,
        )
    try:
        await wait_all(state, request, [handle])
    except EmulatorError as exc:
        return _native_error(state, exc)
    payload = {
        "text": plan.text,
        "output_ids": list(plan.token_ids[: handle.seq.generated]),
        "meta_info": _meta(state, rid, handle, max_new, done=True),
    }
    return state.json(payload, answered=True)


async def _stream_generate(
    state: WorkerState, rid: str, handle: GenerationHandle, max_new: int
) -> AsyncIterator[bytes]:
    try:
        async for count in handle.progress():
            done = count >= len(handle.plan)
            yield sse_event(
                {
                    "text": "".join(p.text for p in handle.plan.pieces[:count]),
                    "output_ids": list(handle.plan.token_ids[:count]),
                    "meta_info": _meta(state, rid, handle, max_new, done=done),
                }
            )
        yield DONE
    finally:
        state.abort_later([handle])


async def health(request: Request) -> Response:
    """``GET /health`` and ``/health_generate`` as SGLang answers them (``http_server.py``).

    503 while the worker is starting; otherwise a one-token generation, whose
    output SGLang looks for after ``asyncio.sleep(1)`` (``health_wait_s``), then
    200 with an empty body. With ``health_generation`` off (SGLang's
    ``SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=false``) ``/health`` answers at
    once. Dead or hung workers never answer.
    """
    state = worker(request)
    if state.faults.dead or state.faults.config.hang:
        await asyncio.Event().wait()
    if state.starting:
        return Response(status_code=503)
    timings = state.config.timings
    if timings.health_generation or request.url.path == "/health_generate":
        await asyncio.sleep(timings.health_wait_s)
    return Response(status_code=200)


def server_info_payload(state: WorkerState) -> dict[str, Any]:
    """``/get_server_info``: server args, scheduler info, internal states and version."""
    engine = state.engine
    config = state.config
    pool = engine.kv_pool
    capacity = engine.max_total_num_tokens
    kv_gib = capacity * pool.cell_size_bytes / (1 << 30)
    server_args = {
        "model_path": engine.model.hf_name,
        "tokenizer_path": engine.model.hf_name,
        "tokenizer_mode": "auto",
        "load_format": "auto",
        "dtype": "auto",
        "kv_cache_dtype": "auto" if config.kv_dtype in ("bf16", "fp16") else "fp8_e4m3",
        "quantization": config.weights_dtype if config.weights_dtype in ("fp8", "int4") else None,
        "context_length": config.context_length,
        "device": "cuda",
        "served_model_name": state.served_model_name,
        "is_embedding": False,
        "host": config.host,
        "port": config.port,
        "mem_fraction_static": pool.mem_fraction_static,
        "max_running_requests": engine.scheduler.max_running_requests,
        "max_total_tokens": config.max_total_tokens,
        "chunked_prefill_size": engine.scheduler.chunked_prefill_size or -1,
        "cuda_graph_max_bs": engine.defaults.cuda_graph_max_bs,
        "max_prefill_tokens": config.max_prefill_tokens,
        "schedule_policy": "fcfs",
        "page_size": 1,
        "tp_size": config.tp,
        "pp_size": 1,
        "dp_size": 1,
        "stream_interval": 1,
        "random_seed": config.seed,
        "enable_cache_report": config.enable_cache_report,
        "enable_metrics": True,
        "disable_radix_cache": False,
        "log_level": "warning",
    }
    return {
        **server_args,
        "status": "ready",
        "max_total_num_tokens": capacity,
        "max_req_input_len": min(engine.context_length - 1, capacity - 1),
        "internal_states": [
            {
                "last_gen_throughput": round(engine.gen_throughput, 2),
                "memory_usage": {
                    "weight": round(pool.weights_gib, 2),
                    "kvcache": round(kv_gib, 2),
                    "token_capacity": capacity,
                    "graph": 0.0,
                },
                "effective_max_running_requests_per_dp": engine.scheduler.max_running_requests,
            }
        ],
        "version": SGLANG_VERSION,
        "tollway_emulator": {
            "gpu": engine.gpu.name,
            "model": engine.model.name,
            "tp": config.tp,
            "weights_dtype": config.weights_dtype,
            "kv_dtype": config.kv_dtype,
            "instant": config.instant,
            "speed": config.speed,
        },
    }


async def server_info(request: Request) -> Response:
    """``GET /server_info``."""
    state = worker(request)
    return state.json(server_info_payload(state))


async def get_server_info(request: Request) -> Response:
    """``GET /get_server_info``: deprecated, a warning per call (``http_server.py``)."""
    log.warning(
        "Endpoint '/get_server_info' is deprecated and will be removed in a future version. "
        "Please use '/server_info' instead."
    )
    return await server_info(request)


async def model_info(request: Request) -> Response:
    """``GET /get_model_info`` and ``/model_info``."""
    state = worker(request)
    name = state.engine.model.hf_name
    return state.json(
        {
            "model_path": name,
            "tokenizer_path": name,
            "is_generation": not state.config.embedding,
            "preferred_sampling_params": None,
            "weight_version": "default",
        }
    )


async def get_load(request: Request) -> Response:
    """``GET /get_load``: one entry per data-parallel rank (SGLang's legacy shape).

    Always current, unlike the gauges of ``/metrics``. A request counts in
    ``num_reqs`` from arrival until its last token is generated; ``num_tokens``
    is the KV slots allocated (prompts and output so far, not the output still
    to come) plus the prompt and output so far of every queued request; as in
    SGLang, generation does not wait for a slow stream reader, and a client
    that hangs up aborts the request and frees its KV slots: at once for a
    stream, within one disconnect poll for a non-streamed request.
    """
    state = worker(request)
    s = state.engine.scheduler
    waiting_tokens = s.waiting_tokens
    return state.json(
        [
            {
                "dp_rank": 0,
                "num_reqs": len(s.running) + len(s.waiting),
                "num_waiting_reqs": len(s.waiting),
                "num_tokens": s.used_tokens + waiting_tokens,
                "num_pending_tokens": waiting_tokens,
                "ts_tic": time.perf_counter(),
            }
        ]
    )


async def flush_cache(request: Request) -> Response:
    """``GET|POST /flush_cache``: refused (400) while requests are in flight."""
    state = worker(request)
    if state.engine.flush_cache():
        return Response(
            "Cache flushed.\nPlease check backend logs for more details. (When there are "
            "running or waiting requests, the operation will not be performed.)\n",
            status_code=200,
        )
    return Response(
        "Cache not flushed. Please check backend logs for more details. (When there are "
        "running or waiting requests, the operation will not be performed.)\n",
        status_code=400,
    )


async def models(request: Request) -> Response:
    """``GET /v1/models``."""
    state = worker(request)
    name = state.served_model_name
    card = {
        "id": name,
        "object": "model",
        "created": state.started_at,
        "owned_by": "sglang",
        "root": name,
        "parent": None,
        "max_model_len": state.engine.context_length,
    }
    return state.json({"object": "list", "data": [card]})


async def metrics(request: Request) -> Response:
    """``GET /metrics`` in Prometheus text format.

    The scheduler gauges are as the engine last refreshed them (on prefill
    batches, every 40 decode steps, after 30 s idle), not as of this scrape.
    """
    state = worker(request)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def faults(request: Request) -> Response:
    """``GET|POST /_emulator/faults``: read or change the injected faults (emulator only)."""
    state = worker(request)
    if request.method == "POST":
        try:
            state.faults.update(await read_json(request))
        except EmulatorError as exc:
            return state.error(exc)
    return state.json(state.faults.as_dict())
