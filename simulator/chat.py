"""``POST /v1/chat/completions``: SGLang's OpenAI-compatible chat endpoint.

Shapes follow SGLang 0.5.6.post1's ``serving_chat.py`` / ``protocol.py``:
the id is the request's ``rid``, a bare ``uuid4().hex`` (``io_struct.py``
``GenerateReqInput``; ``meta_info["id"]``), ``matched_stop`` on every choice,
``metadata.weight_version``, usage with ``prompt_tokens_details`` only when
tokens were cached (``--enable-cache-report``) and ``reasoning_tokens``, and a
message ``content`` of ``null`` when there is no text. Streams send a role chunk
per choice, content (or tool-call) deltas, one finish chunk per choice after
all choices are done, the usage chunk (``choices: []``) when
``stream_options.include_usage`` is set, then ``data: [DONE]``. Every chunk
carries ``"usage": null`` (``ChatCompletionStreamResponse``) and every delta
all four ``DeltaMessage`` keys, unset ones ``null``.

The output limit is ``max_tokens or max_completion_tokens``
(``ChatCompletionRequest.to_sampling_params``). Checks that SGLang makes before
the response starts (``_validate_request``, the chat template) answer 400;
the tokenizer manager's (context length) answer 400 too, but inside a 200
stream for a streamed request (:class:`~simulator.errors.GenerationError`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from simulator.conversation import validate_messages
from simulator.engine import GenerationHandle, merge_progress
from simulator.errors import (
    EmulatorError,
    GenerationError,
    bad_request,
    check_context_length,
    openai_stream_error,
)
from simulator.generation import GenerationRequest, OutputPlan, Piece, plan_output
from simulator.replies import error_stream, stream_reply, wait_all
from simulator.scheduler import AdmissionError
from simulator.sse import DONE, sse_event
from simulator.state import WorkerState, int_field, read_json, stop_list, usage_dict, worker
from simulator.tokenizer import render_chat


@dataclass(frozen=True, slots=True)
class ChatJob:
    """A parsed chat request: prompt tokens and one planned output per choice."""

    rid: str
    model: str
    requested: int | None
    prompt_ids: tuple[int, ...]
    plans: tuple[OutputPlan, ...]
    stream: bool
    include_usage: bool


def _tools(body: Mapping[str, Any]) -> tuple[tuple[Mapping[str, Any], ...], Any]:
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(
        isinstance(t, Mapping) and isinstance(t.get("function"), Mapping) for t in tools
    ):
        raise bad_request("tools must be a list of function tools", param="tools")
    choice = body.get("tool_choice")
    if choice is None:
        choice = "auto" if tools else "none"
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise bad_request(f"Invalid tool_choice: {choice!r}", param="tool_choice")
        if choice == "required" and not tools:
            raise bad_request("Tools cannot be empty if tool choice is set to required.")
    elif isinstance(choice, Mapping):
        if not tools:
            raise bad_request("Tools cannot be empty if tool choice is set to a specific tool.")
        name = (choice.get("function") or {}).get("name")
        if not any(t["function"].get("name") == name for t in tools):
            raise bad_request(f"Tool '{name}' not found in tools list.")
    else:
        raise bad_request("Invalid tool_choice", param="tool_choice")
    return tuple(tools), choice


def _template_tools(
    tools: tuple[Mapping[str, Any], ...], choice: Any
) -> tuple[Mapping[str, Any], ...] | None:
    """The tools SGLang renders into the prompt (``serving_chat.py`` ``_process_messages``)."""
    if not tools or choice == "none":
        return None
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        return tuple(t for t in tools if t["function"].get("name") == name)
    return tools


def _response_format(body: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, bool]:
    fmt = body.get("response_format")
    if fmt is None:
        return None, False
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "text":
        return None, False
    if kind == "json_object":
        return None, True
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, Mapping):
            raise bad_request("schema_ is required for json_schema response format request.")
        return schema, True
    raise bad_request(f"Invalid response_format type: {kind!r}", param="response_format")


def _check_max_output(state: WorkerState, max_output: int | None) -> None:
    """``serving_chat.py`` ``_validate_request``: only with ``--context-length`` set.

    Note the order there, ``max_completion_tokens or max_tokens``, unlike the
    generation's; and the message's missing space, copied.
    """
    context = state.config.context_length
    if max_output and context and max_output > context:
        raise bad_request(
            f"max_completion_tokens is too large: {max_output}."
            f"This model supports at most {context} completion tokens."
        )


def parse_chat(state: WorkerState, body: Mapping[str, Any]) -> ChatJob:
    """Validate a chat request and plan its outputs (400 on anything invalid)."""
    messages = validate_messages(body.get("messages"))
    tools, tool_choice = _tools(body)
    n = int_field(body, "n", 1) or 1
    max_tokens = int_field(body, "max_tokens", None, minimum=0)
    max_completion_tokens = int_field(body, "max_completion_tokens", None, minimum=0)
    schema, json_mode = _response_format(body)
    _check_max_output(state, max_completion_tokens or max_tokens)
    prompt = render_chat(messages, _template_tools(tools, tool_choice))
    prompt_ids = tuple(state.tokenizer.encode(prompt))
    requested = max_tokens or max_completion_tokens
    limit = max(1, state.engine.context_length - len(prompt_ids) - 1)
    max_new = requested if requested is not None else limit
    seed = body.get("seed")
    options = body.get("stream_options")
    config = state.config
    plans = tuple(
        plan_output(
            GenerationRequest(
                prompt_ids=prompt_ids,
                max_tokens=max_new,
                choice_index=i,
                seed=config.seed * 1_000_003 + (seed if isinstance(seed, int) else 0),
                stop=stop_list(body.get("stop")),
                ignore_eos=bool(body.get("ignore_eos", False)),
                json_schema=schema,
                json_mode=json_mode,
                tools=tools,
                tool_choice=tool_choice,
                parallel_tool_calls=body.get("parallel_tool_calls") is not False,
                last_role=str(messages[-1].get("role")),
                min_natural_tokens=config.min_output_tokens,
                max_natural_tokens=config.max_output_tokens,
            ),
            state.tokenizer,
        )
        for i in range(n)
    )
    return ChatJob(
        rid=uuid.uuid4().hex,
        requested=requested,
        model=str(body.get("model") or "default"),
        prompt_ids=prompt_ids,
        plans=plans,
        stream=bool(body.get("stream", False)),
        include_usage=isinstance(options, Mapping) and bool(options.get("include_usage")),
    )


async def chat_completions(request: Request) -> Response:
    """Handle ``POST /v1/chat/completions``."""
    state = worker(request)
    try:
        body = await read_json(request)
        await state.gate()
        job = parse_chat(state, body)
    except EmulatorError as exc:
        return state.error(exc)
    try:
        check_context_length(state.engine.context_length, len(job.prompt_ids), job.requested)
        handles = [
            state.engine.submit(job.rid, job.prompt_ids, p, max_new_tokens=job.requested)
            for p in job.plans
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
    return state.json(_response(state, job, handles), answered=True)


def _usage(state: WorkerState, job: ChatJob, handles: Sequence[GenerationHandle]) -> dict[str, Any]:
    return usage_dict(
        len(job.prompt_ids),
        sum(h.seq.generated for h in handles),
        handles[0].cached_tokens,
        cache_report=state.config.enable_cache_report,
    )


def _response(
    state: WorkerState, job: ChatJob, handles: Sequence[GenerationHandle]
) -> dict[str, Any]:
    choices = []
    for i, plan in enumerate(job.plans):
        calls = [c.to_openai(k) for k, c in enumerate(plan.tool_calls)] or None
        choices.append(
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": plan.text or None,
                    "reasoning_content": None,
                    "tool_calls": calls,
                },
                "logprobs": None,
                "finish_reason": plan.finish_reason,
                "matched_stop": plan.matched_stop,
            }
        )
    return {
        "id": job.rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": job.model,
        "choices": choices,
        "usage": _usage(state, job, handles),
        "metadata": {"weight_version": "default"},
    }


def _chunk(
    job: ChatJob, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None
) -> bytes:
    return sse_event(
        {
            "id": job.rid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": job.model,
            "choices": choices,
            "usage": usage,
        }
    )


def _choice(
    index: int, delta: dict[str, Any], finish: str | None = None, matched: int | str | None = None
) -> dict[str, Any]:
    return {
        "index": index,
        "delta": delta,
        "logprobs": None,
        "finish_reason": finish,
        "matched_stop": matched,
    }


def _delta(
    *,
    role: str | None = None,
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``DeltaMessage`` as SGLang serialises it: all four keys, unset ones null."""
    return {"role": role, "content": content, "reasoning_content": None, "tool_calls": tool_calls}


def _tool_delta(call: dict[str, Any]) -> dict[str, Any]:
    return _delta(tool_calls=[call])


def _deltas(index: int, plan: OutputPlan, pieces: Sequence[Piece]) -> list[dict[str, Any]]:
    """Group newly generated pieces into stream deltas (text, tool header, arguments)."""
    out: list[dict[str, Any]] = []
    text = ""
    args = ""
    args_call: int | None = None

    def flush_args() -> None:
        nonlocal args, args_call
        if args_call is not None and args:
            call = {
                "id": None,
                "index": args_call,
                "type": "function",
                "function": {"name": None, "arguments": args},
            }
            out.append(_choice(index, _tool_delta(call)))
        args, args_call = "", None

    for piece in pieces:
        if piece.call_index is None:
            text += piece.text
            continue
        if piece.call_header:
            flush_args()
            tc = plan.tool_calls[piece.call_index]
            call = {
                "id": tc.id,
                "index": piece.call_index,
                "type": "function",
                "function": {"name": tc.name, "arguments": ""},
            }
            out.append(_choice(index, _tool_delta(call)))
        else:
            if args_call != piece.call_index:
                flush_args()
            args_call = piece.call_index
            args += piece.text
    flush_args()
    if text:
        out.insert(0, _choice(index, _delta(content=text)))
    return out


async def _stream(
    state: WorkerState, job: ChatJob, handles: Sequence[GenerationHandle]
) -> AsyncIterator[bytes]:
    sent = [0] * len(handles)
    started = [False] * len(handles)
    try:
        async for index, count in merge_progress(handles):
            plan = job.plans[index]
            if not started[index]:
                started[index] = True
                yield _chunk(job, [_choice(index, _delta(role="assistant", content=""))])
            new = plan.pieces[sent[index] : count]
            sent[index] = count
            for choice in _deltas(index, plan, new):
                yield _chunk(job, [choice])
        for index, plan in enumerate(job.plans):
            yield _chunk(job, [_choice(index, _delta(), plan.finish_reason, plan.matched_stop)])
        if job.include_usage:
            yield _chunk(job, [], usage=_usage(state, job, handles))
        yield DONE
    finally:
        state.abort_later(handles)
