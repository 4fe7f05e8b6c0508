"""Errors on the Anthropic routes, in Anthropic's shape.

``{"type": "error", "error": {"type": ..., "message": ...}}``, with the status of the
gateway's error: the rendering is :meth:`tollway.errors.TollwayError.to_anthropic_body`
(Anthropic's type read off the status), the same for the errors the dispatcher and the
HTTP protocol answer on these routes (:func:`gateway.responses.error_response`).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from tollway.errors import RateLimited, TollwayError, UpstreamError, UpstreamRejected

JSON = "application/json"


def error_body(exc: TollwayError) -> dict[str, Any]:
    """The Anthropic error object for ``exc``."""
    return exc.to_anthropic_body()


def anthropic_error_response(exc: TollwayError, request_id: str | None) -> Response:
    """The response for ``exc`` on an Anthropic route: its status and headers, Anthropic's
    body. The dispatcher adds ``x-request-id``; Anthropic's clients read ``request-id``."""
    headers = dict(exc.headers)
    if request_id:
        headers["request-id"] = request_id
    return Response(
        orjson.dumps(error_body(exc)), status_code=exc.status_code, headers=headers, media_type=JSON
    )


def error_from_openai(body: Any, status: int) -> TollwayError:
    """The gateway error an OpenAI-shaped error body stands for (a stream's error event,
    a stored answer), so that it renders in Anthropic's shape like any other.
    """
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or "The upstream failed.")
    if error.get("type") in _RATE_TYPES:
        return RateLimited(message)
    if 400 <= status < 500:
        return UpstreamRejected(message, upstream_status=status)
    return UpstreamError(message)


#: OpenAI's error types of the gateway's 429s (:class:`tollway.errors.RateLimited`).
_RATE_TYPES = frozenset({"requests", "tokens", "insufficient_quota"})
