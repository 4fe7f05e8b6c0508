"""Errors the emulator answers with, shaped exactly as SGLang shapes them.

SGLang's OpenAI-compatible routes answer an error with its ``ErrorResponse``
(``sglang/srt/entrypoints/openai/protocol.py``)::

    {"object": "error", "message": "...", "type": "BadRequestError", "param": null, "code": 400}

``type`` is the ``HTTPStatus`` phrase in CamelCase (``BadRequestError``,
``InternalServerError``...) and ``code`` repeats the HTTP status. Recent SGLang
builds wrap the same fields in OpenAI's envelope
(``{"error": {"message", "type", "param", "code"}}``); ``style="openai"``
selects that shape.
"""

from __future__ import annotations

import json
from typing import Any, Literal

ErrorStyle = Literal["sglang", "openai"]


class EmulatorError(Exception):
    """An error answer: HTTP ``status``, SGLang ``err_type`` and ``param``."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        err_type: str = "BadRequestError",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.err_type = err_type
        self.param = param


class GenerationError(EmulatorError):
    """A 400 raised where SGLang's tokenizer manager raises ``ValueError``.

    ``tokenizer_manager.py`` ``generate_request`` validates the tokenized
    request (``_validate_one_request``: context length) and notices client
    disconnects. A non-streamed request answers it as a 400 error; a streamed
    one has already answered 200, so the error is one ``data: {"error": ...}``
    event followed by ``data: [DONE]`` (``serving_chat.py``
    ``_generate_chat_stream``, ``serving_completions.py``, ``http_server.py``
    ``generate_request``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400, err_type="BadRequestError")


def check_context_length(
    context_length: int, input_tokens: int, max_new_tokens: int | None
) -> None:
    """SGLang's length checks, with its messages (:class:`GenerationError` when over).

    ``tokenizer_manager.py`` ``_validate_one_request``: the input alone must be
    shorter than the context, and so must the input plus ``max_new_tokens``
    when it is set (no ``--allow-auto-truncate``).
    """
    if input_tokens >= context_length:
        raise GenerationError(
            f"The input ({input_tokens} tokens) is longer than the "
            f"model's context length ({context_length} tokens)."
        )
    if max_new_tokens is not None and max_new_tokens + input_tokens >= context_length:
        total = max_new_tokens + input_tokens
        raise GenerationError(
            f"Requested token count exceeds the model's maximum context length "
            f"of {context_length} tokens. You requested a total of {total} "
            f"tokens: {input_tokens} tokens from the input messages and "
            f"{max_new_tokens} tokens for the completion. Please reduce the number "
            f"of tokens in the input messages or the completion to fit within the limit."
        )


def bad_request(message: str, param: str | None = None) -> EmulatorError:
    """A 400 ``BadRequestError``."""
    return EmulatorError(message, status=400, err_type="BadRequestError", param=param)


def internal_error(message: str) -> EmulatorError:
    """A 500 ``InternalServerError``."""
    return EmulatorError(message, status=500, err_type="InternalServerError")


def openai_stream_error(error: EmulatorError) -> bytes:
    """The event SGLang's OpenAI routes send for an error inside a 200 stream.

    ``serving_base.py`` ``create_streaming_error_response``:
    ``json.dumps({"error": ErrorResponse(...).model_dump()})`` (so Python's
    default separators, ``param`` always null), sent as ``data: {...}``.
    """
    fields = {
        "object": "error",
        "message": error.message,
        "type": error.err_type,
        "param": None,
        "code": error.status,
    }
    return b"data: " + json.dumps({"error": fields}).encode() + b"\n\n"


def error_body(error: EmulatorError, style: ErrorStyle = "sglang") -> dict[str, Any]:
    """The JSON body SGLang sends for ``error``."""
    fields: dict[str, Any] = {
        "message": error.message,
        "type": error.err_type,
        "param": error.param,
        "code": error.status,
    }
    if style == "openai":
        return {"error": fields}
    return {"object": "error", **fields}
