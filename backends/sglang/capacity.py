"""Refusing a request no worker of a pool can ever hold.

A running sequence holds its whole context in a worker's KV pool: its prompt
and every token it generates. A request whose prompt plus the output it asked
for exceeds the largest worker's whole pool (``max_total_num_tokens``) can
never run there, however long it waits; SGLang would refuse it after the
gateway admitted it, reserved room for it and sent it. The pool refuses it
first, with 400 ``context_length_exceeded``, and nothing reaches a worker.

The prompt's size is an estimate (:func:`tollway.token_estimate.estimate_json_tokens`
runs about 12% high), so the refusal reads it conservatively
(:func:`tollway.token_estimate.least_tokens`): only a request that cannot fit
even if its prompt is half what was estimated is refused (a request
between the two readings is sent, and a worker that cannot hold it answers
its own 400, relayed). The output
counts only when the client asked for a limit (``max_tokens`` or
``max_completion_tokens``, times ``n``): without one, SGLang generates until
the pool or the context ends, so the prompt alone is judged. The model's
context length is not checked here: the worker's own 400 for it is relayed.

A pool with a worker whose capacity is not known yet (no ``/server_info``
answer and no modelled capacity) refuses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from backends.base import UpstreamRequest
from backends.sglang.worker import Worker
from tollway.errors import ContextLengthExceeded

#: The body field holding the prompt, by path (chat: ``messages``).
PROMPT_PARAMS = {"/v1/completions": "prompt", "/v1/embeddings": "input"}


def least_kv_tokens(request: UpstreamRequest) -> int:
    """The fewest KV tokens ``request`` can need on a worker (see the module docstring)."""
    return request.least_prompt_tokens + request.max_output_tokens


def largest_capacity(workers: Sequence[Worker]) -> int | None:
    """The largest worker's KV capacity in tokens; None while any worker's is unknown."""
    capacities = [w.capacity_tokens for w in workers]
    if not capacities or any(c is None for c in capacities):
        return None
    return max(c for c in capacities if c is not None)


def check_fits(request: UpstreamRequest, workers: Sequence[Worker], model: str) -> None:
    """Raise :class:`ContextLengthExceeded` when no worker's whole KV pool can hold ``request``."""
    limit = largest_capacity(workers)
    least = least_kv_tokens(request)
    if limit is None or least <= limit:
        return
    prompt, output = request.least_prompt_tokens, request.max_output_tokens
    field = PROMPT_PARAMS.get(request.path, "messages")
    param = field if prompt > limit else "max_tokens"
    raise ContextLengthExceeded(
        f"This model's maximum context length is {limit} tokens (the KV cache of the "
        f"largest worker serving {model}). However, you requested at least {least} tokens "
        f"({prompt} in the {field}, counted conservatively, {output} in the completion). "
        f"Please reduce the length of the {field} or completion.",
        param=param,
    )
