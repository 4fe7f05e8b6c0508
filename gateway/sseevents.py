"""The events of an upstream's SSE stream, read by their bytes.

The relay (:mod:`gateway.relay`) parses only the events these markers say it
must: one that carries a ``usage`` object (:func:`has_usage`), an ``error``
object (:func:`stream_error`) or the ``[DONE]`` marker, and one with tool-call
deltas (:func:`tool_call_keys`). SGLang's null delta members go by byte
replacement (:func:`without_null_delta_fields`). :func:`error_event` is the SSE
event that carries a Tollway error to the client.
"""

from __future__ import annotations

import orjson

from backends.sglang.transport import error_from_upstream
from tollway.errors import TollwayError, UpstreamError

#: Markers searched for in whole events (:class:`~gateway.sseframing.EventFramer`'s
#: blocks) before anything is parsed.
DONE = b"data: [DONE]"
USAGE = b'"usage"'
_NULL_USAGE = (b'"usage":null', b'"usage": null')
CONTENT = b'"content":"'
EMPTY_CONTENT = b'"content":""'
TOOL_CALLS_KEY = b'"tool_calls":'
TOOL_CALLS = b'"tool_calls":['
ERROR = b'"error"'
#: SGLang's stream deltas carry every ``DeltaMessage`` key, unset ones ``null``
#: (``{"role":null,"content":"Hi","reasoning_content":null,"tool_calls":null}``);
#: OpenAI's omit them, and strict clients refuse a null ``role`` or ``tool_calls``.
#: A block without a ``"tool_calls":`` key has no SGLang delta: it is not searched.
#: SGLang writes compact JSON with the delta's ``role`` first: the other null members
#: are ``,"<key>":null``, and once they are gone a null role is ``{"role":null,`` or
#: ``{"role":null}``. Inside a JSON string a quote is escaped, so none of these can
#: match text.
_NULL_ROLE = (b'{"role":null,', b'{"role":null}')
_NULL_CONTENT = b',"content":null'
_NULL_REASONING = b',"reasoning_content":null'
_NULL_TOOL_CALLS = b',"tool_calls":null'


def has_usage(block: bytes) -> bool:
    """Whether ``block`` carries a ``usage`` that is not ``null``."""
    count = block.count(USAGE)
    if not count:
        return False
    nulls = block.count(_NULL_USAGE[0])  # SGLang: ``"usage":null`` in every chunk
    return nulls != count and count != nulls + block.count(_NULL_USAGE[1])


def without_null_delta_fields(ready: bytes) -> bytes:
    """``ready`` (whole SSE events) without the ``null`` ``role``, ``content``,
    ``reasoning_content`` and ``tool_calls`` members SGLang puts in every delta."""
    return (
        ready.replace(_NULL_CONTENT, b"")
        .replace(_NULL_REASONING, b"")
        .replace(_NULL_TOOL_CALLS, b"")
        .replace(_NULL_ROLE[0], b"{")
        .replace(_NULL_ROLE[1], b"{}")
    )


def tool_call_keys(ready: bytes) -> set[tuple[object, object]]:
    """The (choice index, tool-call index) of every tool-call delta in ``ready``.

    A call's deltas all carry its ``index`` (SGLang repeats ``"type":"function"`` in
    each, and a call's arguments may hold any text), so distinct indexes count calls.
    Only events that mention ``"tool_calls":[`` are parsed.
    """
    keys: set[tuple[object, object]] = set()
    for event in ready.split(b"\n\n"):
        if TOOL_CALLS not in event:
            continue
        try:
            payload = orjson.loads(event[event.find(b"{") :])
        except orjson.JSONDecodeError:
            continue
        choices = payload.get("choices") if isinstance(payload, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            calls = delta.get("tool_calls") if isinstance(delta, dict) else None
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    index = call.get("index")
                    keys.add((choice.get("index"), index if index is not None else call.get("id")))
    return keys


def error_event(exc: TollwayError) -> bytes:
    """An SSE event carrying an OpenAI error object."""
    return b"data: " + orjson.dumps(exc.to_body()) + b"\n\n"


def stream_error(event: bytes, worker: str) -> UpstreamError | None:
    """The error an upstream reported as an event of its 200 stream, if ``event`` is one.

    ``{"error": {...}}`` without ``choices`` is an error event; its ``code``, when it
    is an HTTP status (SGLang's), maps like that status answered up front
    (:func:`backends.sglang.transport.error_from_upstream`: a 4xx is the client's,
    relayed with its status); without one it is the upstream's internal error.
    """
    if ERROR not in event:
        return None
    try:
        payload = orjson.loads(event[event.find(b"{") :])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or payload.get("choices"):
        return None
    error = payload.get("error")
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    status = code if type(code) is int and 400 <= code <= 599 else 500
    exc = error_from_upstream(status, orjson.dumps(error), worker)
    return exc if isinstance(exc, UpstreamError) else UpstreamError(exc.message)
