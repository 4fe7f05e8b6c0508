"""OpenAI's embeddings API (``POST /v1/embeddings``): the request checked, the answer shaped.

The route runs the one inference pipeline (:meth:`gateway.pipeline.InferencePipeline.embeddings`);
this module holds what is particular to embeddings:

* :func:`validate_embedding`: ``input`` is a non-empty string, a list of 1 to
  :data:`MAX_INPUTS` non-empty strings, a token array (non-negative integers) or a list
  of token arrays; ``encoding_format`` is ``float`` or ``base64``; ``dimensions`` a
  positive integer; ``user`` a string. Anything else is a 400 naming the field.
* :func:`upstream_body`: what the upstream is asked. SGLang always answers floats
  (it ignores ``encoding_format``), so the upstream is asked for floats and the
  gateway encodes base64 itself, as OpenAI does: the little-endian float32 bytes.
* :func:`shape_response`: the upstream's body brought to OpenAI's
  ``CreateEmbeddingResponse`` (``usage`` is ``prompt_tokens`` and ``total_tokens``),
  returning the usage the request is billed on (prompt tokens; no completion tokens).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

from gateway.chat_messages import invalid, is_int
from gateway.shapes import checked_usage
from policies.tokens import TokenCounter
from tollway.errors import InvalidRequest, UpstreamUnusableAnswer

EMBEDDINGS_PATH = "/v1/embeddings"
#: OpenAI's limit on the inputs of one request.
MAX_INPUTS = 2048
_FORMATS = ("float", "base64")


@dataclass(slots=True, frozen=True)
class EmbeddingView:
    """The fields of an embeddings body the gateway uses."""

    model: str
    inputs: int
    encoding_format: str


def _text(value: Any, param: str) -> None:
    if not isinstance(value, str):
        raise invalid(f"'{param}' must be a string or a token array", param, "invalid_type")
    if not value.strip():
        raise invalid(f"'{param}' must not be empty", param)


def _tokens(value: list[Any], param: str) -> None:
    if not value:
        raise invalid(f"'{param}' must not be an empty token array", param)
    for j, token in enumerate(value):
        if not is_int(token) or token < 0:
            raise invalid(
                f"'{param}[{j}]' must be a non-negative integer token id",
                f"{param}[{j}]",
                "invalid_type",
            )


def _count(value: Any) -> int:
    """How many inputs ``input`` holds (validating it)."""
    if isinstance(value, str):
        _text(value, "input")
        return 1
    if not isinstance(value, list):
        raise invalid(
            "'input' must be a string, a list of strings, a token array or a list of token arrays",
            "input",
            "invalid_type",
        )
    if not value:
        raise invalid("'input' must not be an empty list", "input")
    if len(value) > MAX_INPUTS:
        raise invalid(
            f"'input' holds {len(value)} items; at most {MAX_INPUTS} are allowed", "input"
        )
    if is_int(value[0]):
        _tokens(value, "input")
        return 1
    for i, item in enumerate(value):
        if isinstance(item, list):
            _tokens(item, f"input[{i}]")
        else:
            _text(item, f"input[{i}]")
    return len(value)


def validate_embedding(body: dict[str, Any]) -> EmbeddingView:
    """Check an embeddings body (400 ``invalid_request_error`` naming the bad field)."""
    model = body.get("model")
    if model is None:
        raise invalid("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise invalid("'model' must be a non-empty string", "model", "invalid_type")
    if "input" not in body:
        raise invalid("you must provide an input parameter", "input", "missing_required_parameter")
    inputs = _count(body["input"])
    encoding = body.get("encoding_format")
    if encoding is None:
        encoding = "float"
    if encoding not in _FORMATS:
        raise invalid("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not is_int(dimensions) or dimensions < 1):
        raise invalid("'dimensions' must be a positive integer", "dimensions", "invalid_type")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise invalid("'user' must be a string", "user", "invalid_type")
    if body.get("stream"):
        raise invalid("embeddings cannot be streamed", "stream")
    return EmbeddingView(model, inputs, encoding)


def wrong_task(model: str, embedding: bool) -> InvalidRequest:
    """400 for a chat model asked for embeddings, or an embedding model asked to chat."""
    if embedding:
        message = f"The model `{model}` is an embedding model: use /v1/embeddings."
    else:
        message = f"The model `{model}` does not serve embeddings."
    return InvalidRequest(message, param="model", code="model_not_supported")


def upstream_body(body: dict[str, Any]) -> None:
    """Ask the upstream for floats (the gateway encodes base64 itself)."""
    body["encoding_format"] = "float"


def _encoded(vector: Any, encoding: str) -> Any:
    if not isinstance(vector, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in vector
    ):
        raise UpstreamUnusableAnswer("The upstream's embedding is not a list of numbers.")
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def shape_response(data: dict[str, Any], encoding: str, inputs: int) -> dict[str, Any] | None:
    """Bring ``data`` (already named after the public model) to OpenAI's shape, in place;
    returns the usage the request is billed on (checked by
    :func:`~gateway.shapes.checked_usage`; None when the upstream reported none)."""
    items = data.get("data")
    if not isinstance(items, list) or len(items) != inputs:
        raise UpstreamUnusableAnswer("The upstream's answer does not hold one embedding per input.")
    shaped = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise UpstreamUnusableAnswer("The upstream's embedding is not an object.")
        index = item.get("index", position)
        shaped.append(
            {
                "object": "embedding",
                "index": index if is_int(index) else position,
                "embedding": _encoded(item.get("embedding"), encoding),
            }
        )
    data["object"] = "list"
    data["data"] = shaped
    usage = data.pop("usage", None)
    if usage is None:
        return None
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    billed = checked_usage(
        {"prompt_tokens": prompt, "completion_tokens": 0, "total_tokens": prompt}
    )
    data["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
    return billed


def input_tokens(value: Any, counter: TokenCounter) -> int:
    """The tokens of an embeddings ``input`` (token arrays exactly, text by ``counter``)."""
    if isinstance(value, str):
        return counter.count_text(value)
    if not isinstance(value, list):
        return 0
    if value and is_int(value[0]):
        return len(value)
    return sum(input_tokens(item, counter) for item in value)
