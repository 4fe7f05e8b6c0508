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


def bad_request(message: str, param: str | None = None) -> EmulatorError:
    """A 400 ``BadRequestError``."""
    return EmulatorError(message, status=400, err_type="BadRequestError", param=param)


def internal_error(message: str) -> EmulatorError:
    """A 500 ``InternalServerError``."""
    return EmulatorError(message, status=500, err_type="InternalServerError")


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
