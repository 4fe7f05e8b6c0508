"""``POST /v1/embeddings``: SGLang's embedding endpoint (a worker run with ``--is-embedding``).

As SGLang 0.5.6.post1's ``serving_embedding.py``: ``input`` is a string, a list of
strings, a token array or a list of token arrays, checked by its
``_validate_request`` with its messages; ``encoding_format`` is ignored (always
floats); the answer is ``{"data": [{"embedding", "index", "object"}], "model",
"object": "list", "usage"}`` with ``usage.prompt_tokens`` the tokens embedded.
``dimensions`` follows ``tokenizer_manager.py``'s Matryoshka checks (the emulated
model is Matryoshka: any size up to its own). A worker that is not an embedding
worker answers SGLang's "not an embedding model" error.

The vectors are deterministic: seeded by the worker's seed and a hash of the
input's token ids, unit length (truncated to ``dimensions`` and normalised again).
Embedding requests are answered after the worker's faults (latency, hang, errors)
but do not enter the engine's batch or KV pool.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from simulator.errors import EmulatorError, GenerationError, bad_request, check_context_length
from simulator.state import WorkerState, read_json, usage_dict, worker

#: SGLang's error for an embedding request to a generation model (``tokenizer_manager.py``).
NOT_EMBEDDING = (
    "This model does not appear to be an embedding model by default. "
    "Please add `--is-embedding` when launching the server or try another model."
)
#: The emulator's answer to a generation request on an embedding worker (SGLang
#: 0.5.6.post1 has no explicit check for it).
NOT_GENERATING = (
    "This model is an embedding model (the server runs with `--is-embedding`): "
    "it cannot generate; use /v1/embeddings."
)


def _validate(value: Any) -> str | None:
    """SGLang's ``OpenAIServingEmbedding._validate_request``, message for message."""
    if not value:
        return "Input cannot be empty"
    if isinstance(value, str):
        return "Input cannot be empty or whitespace only" if not value.strip() else None
    if isinstance(value, list):
        first = value[0]
        if isinstance(first, str):
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    return "All items in input list must be strings"
                if not item.strip():
                    return f"Input at index {i} cannot be empty or whitespace only"
        elif isinstance(first, int):
            for i, item in enumerate(value):
                if not isinstance(item, int):
                    return "All items in input list must be integers"
                if item < 0:
                    return f"Token ID at index {i} must be non-negative"
    return None


def _prompts(state: WorkerState, value: Any) -> list[list[int]]:
    """The token ids of each input."""
    tok = state.tokenizer
    if isinstance(value, str):
        return [tok.encode(value)]
    if isinstance(value, list) and isinstance(value[0], str):
        return [tok.encode(text) for text in value]
    if isinstance(value, list) and isinstance(value[0], int):
        return [list(value)]
    if isinstance(value, list) and all(
        isinstance(item, list) and item and all(isinstance(t, int) for t in item) for item in value
    ):
        return [list(item) for item in value]
    raise bad_request("input must be a string, a list of strings or token ids", param="input")


def _dimensions(state: WorkerState, value: Any) -> int:
    """The output size: the model's, or the request's ``dimensions`` (SGLang's checks)."""
    size = state.embedding_dimensions
    if value is None:
        return size
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request("dimensions must be an integer", param="dimensions")
    if value < 1:
        raise bad_request("Requested dimensions must be greater than 0")
    if value > size:
        raise bad_request(f"Provided dimensions are greater than max embedding dimension: {size}")
    return value


def embedding_vector(seed: int, tokens: list[int], dimensions: int, size: int) -> list[float]:
    """The deterministic unit vector of ``tokens``: ``size`` Gaussian draws seeded by a
    hash of the ids, cut to ``dimensions`` and normalised."""
    digest = hashlib.blake2b(repr((seed, tokens)).encode(), digest_size=16).digest()
    draw = random.Random(int.from_bytes(digest, "big"))
    vector = [draw.gauss(0.0, 1.0) for _ in range(size)][:dimensions]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


async def embeddings(request: Request) -> Response:
    """Handle ``POST /v1/embeddings``."""
    state = worker(request)
    try:
        body = await read_json(request)
        await state.gate()
        if not state.config.embedding:
            raise GenerationError(NOT_EMBEDDING)
        value = body.get("input")
        problem = _validate(value)
        if problem is not None:
            raise bad_request(problem)
        prompts = _prompts(state, value)
        dimensions = _dimensions(state, body.get("dimensions"))
        for prompt in prompts:
            check_context_length(state.engine.context_length, len(prompt), None)
    except EmulatorError as exc:
        return state.error(exc)
    size = state.embedding_dimensions
    data = [
        {
            "embedding": embedding_vector(state.config.seed, prompt, dimensions, size),
            "index": i,
            "object": "embedding",
        }
        for i, prompt in enumerate(prompts)
    ]
    tokens = sum(len(p) for p in prompts)
    payload = {
        "data": data,
        "model": state.engine.model.hf_name,  # SGLang names the model path here
        "object": "list",
        "usage": usage_dict(tokens, 0, 0, cache_report=False),
    }
    return state.json(payload, answered=True)


async def not_generating(request: Request) -> Response:
    """A generation route of an embedding worker: a 400 in SGLang's shape."""
    state = worker(request)
    return state.error(bad_request(NOT_GENERATING))
