"""``POST /v1/completions``: SGLang's OpenAI-compatible text completion endpoint.

As SGLang 0.5.6.post1's ``serving_completions.py``: the id is the bare-hex
``rid``, ``max_tokens`` defaults to 16, every stream chunk carries ``usage``
(null but for the last), and the tokenizer manager's context-length check
answers 400, inside a 200 stream for a streamed request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from simulator.engine import GenerationHandle, merge_progress
from simulator.errors import (
    EmulatorError,
    GenerationError,
    bad_request,
    check_context_length,
    openai_stream_error,
)
from simulator.generation import GenerationRequest, OutputPlan, plan_output
from simulator.replies import error_stream, stream_reply, wait_all
from simulator.scheduler import AdmissionError
from simulator.sse import DONE, sse_event
from simulator.state import WorkerState, int_field, read_json, stop_list, usage_dict, worker


@dataclass(frozen=True, slots=True)
class CompletionJob:
    """Prompts (``n`` choices each) with their planned outputs, choice-major order."""

    rid: str
    model: str
    prompts: tuple[tuple[int, ...], ...]
    prompt_texts: tuple[str, ...]
    plans: tuple[OutputPlan, ...]
    n: int
    max_tokens: int
    echo: bool
    stream: bool
    include_usage: bool


def _prompts(state: WorkerState, prompt: Any) -> list[tuple[str, tuple[int, ...]]]:
    tok = state.tokenizer
    if isinstance(prompt, str):
        return [(prompt, tuple(tok.encode(prompt)))]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) for p in prompt):
            return [(tok.decode(prompt), tuple(prompt))]
        if all(isinstance(p, str) for p in prompt):
            return [(p, tuple(tok.encode(p))) for p in prompt]
        if all(isinstance(p, list) and all(isinstance(i, int) for i in p) for p in prompt):
            return [(tok.decode(p), tuple(p)) for p in prompt]
    raise bad_request("prompt must be a string, a list of strings or token ids", param="prompt")


def parse_completion(state: WorkerState, body: Mapping[str, Any]) -> CompletionJob:
    """Validate a completion request and plan its outputs."""
    prompts = _prompts(state, body.get("prompt"))
    n = int_field(body, "n", 1) or 1
    max_tokens = int_field(body, "max_tokens", 16) or 16
    seed = body.get("seed")
    options = body.get("stream_options")
    config = state.config
    plans = []
    for _, ids in prompts:
        for i in range(n):
            plans.append(
                plan_output(
                    GenerationRequest(
                        prompt_ids=ids,
                        max_tokens=max_tokens,
                        choice_index=i,
                        seed=config.seed * 1_000_003 + (seed if isinstance(seed, int) else 0),
                        stop=stop_list(body.get("stop")),
                        ignore_eos=bool(body.get("ignore_eos", False)),
                        min_natural_tokens=config.min_output_tokens,
                        max_natural_tokens=config.max_output_tokens,
                    ),
                    state.tokenizer,
                )
            )
    return CompletionJob(
        rid=uuid.uuid4().hex,
        model=str(body.get("model") or "default"),
        prompts=tuple(ids for _, ids in prompts),
        prompt_texts=tuple(text for text, _ in prompts),
        plans=tuple(plans),
        n=n,
        max_tokens=max_tokens,
        echo=bool(body.get("echo", False)),
        stream=bool(body.get("stream", False)),
        include_usage=isinstance(options, Mapping) and bool(options.get("include_usage")),
    )


async def completions(request: Request) -> Response:
    """Handle ``POST /v1/completions``."""
    state = worker(request)
    try:
        body = await read_json(request)
        await state.gate()
        job = parse_completion(state, body)
    except EmulatorError as exc:
        return state.error(exc)
    try:
        for prompt in job.prompts:
            check_context_length(state.engine.context_length, len(prompt), job.max_tokens)
        handles = [
            state.engine.submit(
                job.rid, job.prompts[i // job.n], plan, max_new_tokens=job.max_tokens
            )
            for i, plan in enumerate(job.plans)
        ]
    except (GenerationError, AdmissionError) as exc:
        error = exc if isinstance(exc, GenerationError) else GenerationError(str(exc))
        if job.stream:
            return error_stream(state, openai_stream_error(error))
        return state.error(error)
    if job.stream:
        return stream_reply(state, _stream(state, job, handles))
    try:
        await wait_all(state, request, handles)
    except EmulatorError as exc:
        return state.error(exc)
    choices = [
        {
            "index": i,
            "text": (job.prompt_texts[i // job.n] if job.echo else "") + plan.text,
            "logprobs": None,
            "finish_reason": plan.finish_reason,
            "matched_stop": plan.matched_stop,
        }
        for i, plan in enumerate(job.plans)
    ]
    payload = {
        "id": job.rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": job.model,
        "choices": choices,
        "usage": _usage(state, job, handles),
        "metadata": {"weight_version": "default"},
    }
    return state.json(payload, answered=True)


def _usage(
    state: WorkerState, job: CompletionJob, handles: Sequence[GenerationHandle]
) -> dict[str, Any]:
    first = handles[:: job.n]
    return usage_dict(
        sum(len(p) for p in job.prompts),
        sum(h.seq.generated for h in handles),
        sum(h.cached_tokens for h in first),
        cache_report=state.config.enable_cache_report,
    )


async def _stream(
    state: WorkerState, job: CompletionJob, handles: Sequence[GenerationHandle]
) -> AsyncIterator[bytes]:
    sent = [0] * len(handles)
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        return sse_event(
            {
                "id": job.rid,
                "object": "text_completion",
                "created": created,
                "model": job.model,
                "choices": choices,
                "usage": usage,
            }
        )

    try:
        async for index, count in merge_progress(handles):
            plan = job.plans[index]
            text = "".join(p.text for p in plan.pieces[sent[index] : count])
            if sent[index] == 0 and job.echo:
                text = job.prompt_texts[index // job.n] + text
            sent[index] = count
            done = count >= len(plan)
            yield chunk(
                [
                    {
                        "index": index,
                        "text": text,
                        "logprobs": None,
                        "finish_reason": plan.finish_reason if done else None,
                        "matched_stop": plan.matched_stop if done else None,
                    }
                ]
            )
        if job.include_usage:
            yield chunk([], _usage(state, job, handles))
        yield DONE
    finally:
        state.abort_later(handles)
