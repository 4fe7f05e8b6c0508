"""What an inference request's body asks for, checked once: its route, model and
whether it streams.

:func:`call_of` validates a parsed body for its route (:mod:`gateway.validation`
for chat and completions, :mod:`gateway.embeddings` for embeddings) and returns
the :class:`Call` the pipeline's later stages read, so they never look into the
body for these fields again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.embeddings import EMBEDDINGS_PATH, EmbeddingView, validate_embedding
from gateway.validation import validate_chat, validate_completion

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"


@dataclass(slots=True, frozen=True)
class Call:
    """The validated fields of one request: the model asked for, whether it streams
    and reports usage in the stream, and an embeddings request's inputs."""

    model: str
    stream: bool
    include_usage: bool
    embedding: EmbeddingView | None = None


def call_of(path: str, body: dict[str, Any], max_messages: int) -> Call:
    """Validate ``body`` for the route ``path``; raises the route's invalid-request
    error on the first bad field."""
    if path == CHAT_PATH:
        chat = validate_chat(body, max_messages=max_messages)
        return Call(chat.model, chat.stream, chat.include_usage)
    if path == EMBEDDINGS_PATH:
        view = validate_embedding(body)
        return Call(view.model, False, False, view)
    comp = validate_completion(body)
    return Call(comp.model, comp.stream, comp.include_usage)


@dataclass(slots=True, frozen=True)
class RequestSize:
    """A request's KV size: the estimate admission reserves (``kv_tokens``), and what a
    size refusal reads (the fewest prompt tokens it can have, the output it asked for)."""

    kv_tokens: int
    least_prompt_tokens: int
    max_output_tokens: int
