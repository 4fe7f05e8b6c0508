"""Anthropic's error ``type`` for a Tollway error, read off its HTTP status.

On the routes of Anthropic's Messages API an error is rendered in Anthropic's
shape (:meth:`tollway.errors.TollwayError.to_anthropic_body`); its ``type`` comes
from this table, as Anthropic's API documents it.
"""

from __future__ import annotations

#: Anthropic's error ``type`` by HTTP status (its API's documented table); another 4xx
#: is ``invalid_request_error``, another 5xx ``api_error``. 503 (the gateway or every
#: worker busy or down) is Anthropic's ``overloaded_error``; the status stays 503.
ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    """Anthropic's error ``type`` for an error answered with ``status``."""
    known = ANTHROPIC_TYPES.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if 400 <= status < 500 else "api_error"
