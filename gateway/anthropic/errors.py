"""Errors on the Anthropic routes, in Anthropic's shape.

``{"type": "error", "error": {"type": ..., "message": ...}}``, with the status of the
gateway's error: the one mapping from :mod:`tollway.errors` to Anthropic's error
types is :func:`anthropic_error_type`.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from tollway.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    TollwayError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

JSON = "application/json"


def anthropic_error_type(exc: TollwayError) -> str:
    """Anthropic's error ``type`` for a gateway error."""
    if isinstance(exc, AuthenticationFailed):
        return "authentication_error"
    if isinstance(exc, PermissionDenied):
        return "permission_error"
    if isinstance(exc, NotFound):
        return "not_found_error"
    if isinstance(exc, (RateLimited, UpstreamRateLimited)):
        return "rate_limit_error"
    if isinstance(exc, (ServiceUnavailable, UpstreamUnavailable)):
        return "overloaded_error"
    if isinstance(exc, UpstreamTimeout):
        return "timeout_error"
    if 400 <= exc.status_code < 500:  # the request's fault: validation, 413, the upstream's 4xx
        return "invalid_request_error"
    return "api_error"


def error_body(exc: TollwayError) -> dict[str, Any]:
    """The Anthropic error object for ``exc``."""
    return {"type": "error", "error": {"type": anthropic_error_type(exc), "message": exc.message}}


def anthropic_error_response(exc: TollwayError, request_id: str | None) -> Response:
    """The response for ``exc`` on an Anthropic route: its status and headers, Anthropic's body."""
    headers = dict(exc.headers)
    if request_id:  # the dispatcher adds ``x-request-id``; Anthropic's clients read this one
        headers["request-id"] = request_id
    return Response(
        orjson.dumps(error_body(exc)), status_code=exc.status_code, headers=headers, media_type=JSON
    )


def error_from_openai(body: Any, status: int) -> TollwayError:
    """The gateway error an OpenAI-shaped error body stands for (a stream's error event,
    a stored answer), so that it maps through :func:`anthropic_error_type` like any other.
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
