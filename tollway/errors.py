"""Tollway's one error hierarchy.

Every error a client can see is one of these classes. Each carries the HTTP
status, OpenAI's error ``type`` and ``code``, and optionally the ``param`` it
is about; the gateway maps them to JSON in exactly one exception handler::

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

On the routes of Anthropic's Messages API the same error is rendered in
Anthropic's shape (:meth:`TollwayError.to_anthropic_body`), its ``type`` read off
the status as Anthropic's API documents it
(:data:`tollway.anthropic_errors.ANTHROPIC_TYPES`)::

    {"type": "error", "error": {"type": ..., "message": ...}}

Foreign exceptions (aiohttp, redis, SQLAlchemy, litellm, stripe) are
translated into these at the package boundary that calls the foreign library,
with ``raise ... from exc``. Nothing ever picks a status by matching text.

::

    TollwayError (500 server_error)
    ├── ConfigError                     bad configuration file or environment (start-up)
    ├── InvalidRequest (400 invalid_request_error)
    │   ├── UnknownAgentType (400, code unknown_agent_type)
    │   ├── ContextLengthExceeded (400, code context_length_exceeded; no worker can hold it)
    │   └── RequestTimeout (408, code request_timeout; the request arrived too slowly)
    ├── AuthenticationFailed (401 invalid_request_error, code invalid_api_key)
    ├── PermissionDenied (403 permission_error)
    ├── NotFound (404 invalid_request_error)
    │   └── ModelNotFound (404, code model_not_found)
    ├── MethodNotAllowed (405 invalid_request_error)
    ├── Conflict (409 invalid_request_error)
    ├── PayloadTooLarge (413 invalid_request_error, code request_too_large)
    ├── HeaderFieldsTooLarge (431 invalid_request_error, code request_header_fields_too_large)
    ├── Unprocessable (422 invalid_request_error)
    ├── RateLimited (429 requests, code rate_limit_exceeded; Retry-After)
    │   ├── TokenRateLimited (429 tokens, code rate_limit_exceeded; a TPM limit)
    │   └── QuotaExceeded (429 insufficient_quota)
    ├── ServiceUnavailable (503 server_error; gateway not ready or draining)
    └── UpstreamError (502 upstream_error)          the upstream failed (502 bad_gateway)
        ├── UpstreamUnavailable (503, no healthy worker / cannot connect / 503)
        ├── UpstreamTimeout (504; the upstream's 504 or 408, or no first byte in time)
        ├── UpstreamStreamBroken (502, the stream ended before it finished)
        ├── UpstreamRateLimited (429 requests, code upstream_rate_limited; Retry-After)
        ├── UpstreamServerError (502, code upstream_server_error; the upstream's 500) *
        ├── UpstreamBadResponse (502, code bad_upstream_response; not HTTP, head over limits)
        │   ├── UpstreamUnusableAnswer (502, bad_upstream_response; garbage in a 200) *
        │   └── UpstreamResponseTooLarge (502, code upstream_response_too_large) *
        └── UpstreamRejected (the upstream's own 4xx: the client's mistake, relayed as
                              400/413/422 invalid_request_error with its message) *

Every ``UpstreamError`` is ``retryable`` (another attempt, usually on another
worker, may succeed) except the classes marked ``*``: a rejected request would
be rejected again, and an upstream's internal error is assumed to be caused by
the request until proven otherwise, so it is not repeated.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tollway.anthropic_errors import anthropic_type


class TollwayError(Exception):
    """Base of every Tollway error; renders as an OpenAI-shaped error body."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] = dict(headers) if headers else {}

    @property
    def status_code(self) -> int:
        """HTTP status of the response that carries this error."""
        return self.status

    def to_body(self) -> dict[str, Any]:
        """The OpenAI error object: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_anthropic_body(self) -> dict[str, Any]:
        """The Anthropic error object: ``{"type": "error", "error": {type, message}}``."""
        return {
            "type": "error",
            "error": {"type": anthropic_type(self.status_code), "message": self.message},
        }


class ConfigError(TollwayError):
    """A configuration file or environment variable is invalid.

    ``path`` is the dotted YAML path of the bad key (``pools.h100.gpu``).
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.reason = message


class InvalidRequest(TollwayError):
    """The request is malformed or has a missing or wrong field (400)."""

    status = 400
    error_type = "invalid_request_error"


class UnknownAgentType(InvalidRequest):
    """The agent type named by the request is not configured (400)."""

    default_code = "unknown_agent_type"


class ContextLengthExceeded(InvalidRequest):
    """The request cannot fit any worker's whole KV cache, even read conservatively (400).

    Raised by a pool before anything is sent (``param`` is ``messages`` when the
    prompt alone is too long, else ``max_tokens``); the fallback chain tries the
    next route, if any, before the client sees it.
    """

    default_code = "context_length_exceeded"


class RequestTimeout(InvalidRequest):
    """The request (its head or body) did not arrive in time (408)."""

    status = 408
    default_code = "request_timeout"


class AuthenticationFailed(TollwayError):
    """Missing, malformed, unknown, revoked or expired credentials (401)."""

    status = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDenied(TollwayError):
    """The credentials are valid but not allowed to do this (403)."""

    status = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFound(TollwayError):
    """The addressed resource does not exist (404)."""

    status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    """The requested model is not served by this gateway (404)."""

    default_code = "model_not_found"


class MethodNotAllowed(TollwayError):
    """The URL exists but not for this HTTP method (405)."""

    status = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class Conflict(TollwayError):
    """The request conflicts with the state of a resource (409)."""

    status = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLarge(TollwayError):
    """The request body is over the configured limit (413)."""

    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class HeaderFieldsTooLarge(TollwayError):
    """The request line and headers are over the configured limits (431)."""

    status = 431
    error_type = "invalid_request_error"
    default_code = "request_header_fields_too_large"


class Unprocessable(TollwayError):
    """The request is well-formed but cannot be processed (422)."""

    status = 422
    error_type = "invalid_request_error"
    default_code = "unprocessable"


def _with_retry_after(headers: dict[str, str] | None, retry_after: float | None) -> dict[str, str]:
    """``headers`` plus ``retry-after`` in whole seconds (at least 1), when one is given."""
    merged = dict(headers) if headers else {}
    if retry_after is not None:
        merged["retry-after"] = str(max(1, int(retry_after + 0.999)))
    return merged


class RateLimited(TollwayError):
    """A rate limit was reached (429); ``retry_after`` seconds until it frees."""

    status = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            message, param=param, code=code, headers=_with_retry_after(headers, retry_after)
        )
        self.retry_after = retry_after


class TokenRateLimited(RateLimited):
    """A tokens-per-minute limit was reached (429, type ``tokens`` as OpenAI's)."""

    error_type = "tokens"


class QuotaExceeded(RateLimited):
    """A budget is exhausted (429, ``insufficient_quota``)."""

    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


class ServiceUnavailable(TollwayError):
    """The gateway itself cannot serve right now: not ready or draining (503)."""

    status = 503
    error_type = "server_error"
    default_code = "service_unavailable"


class UpstreamError(TollwayError):
    """The upstream (a pool worker or a hosted provider) failed (502)."""

    status = 502
    error_type = "upstream_error"
    default_code: ClassVar[str | None] = "bad_gateway"

    #: Whether trying again (elsewhere) may succeed.
    retryable: ClassVar[bool] = True


class UpstreamUnavailable(UpstreamError):
    """No healthy upstream, or the connection was refused (503)."""

    status = 503
    default_code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within its timeout (504)."""

    status = 504
    default_code = "upstream_timeout"


class UpstreamStreamBroken(UpstreamError):
    """The upstream's stream ended before it finished (502)."""

    default_code = "upstream_stream_broken"


class UpstreamRateLimited(UpstreamError):
    """The upstream's own rate limit or overload answer (429); ``retry_after`` as it said.

    Retryable: another worker (or a later attempt) may have room.
    """

    status = 429
    error_type = "requests"
    default_code = "upstream_rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            message, param=param, code=code, headers=_with_retry_after(headers, retry_after)
        )
        self.retry_after = retry_after


class UpstreamServerError(UpstreamError):
    """The upstream answered with an internal error (500, 501, 505, other 5xx) (502).

    Not retryable: a 500 is as likely to come from this request as from the
    worker, and repeating it elsewhere could spread the damage.
    """

    default_code = "upstream_server_error"
    retryable = False


class UpstreamBadResponse(UpstreamError):
    """The upstream's answer is not usable HTTP (502): garbage bytes, a head over limits.

    Retryable: another worker is likely to answer properly. The connection it
    came on is closed, never reused.
    """

    default_code = "bad_upstream_response"


class UpstreamUnusableAnswer(UpstreamBadResponse):
    """The upstream answered 200 with something the gateway cannot pass on (502): a
    body that is not a JSON object, a ``usage`` that is not token counts, an SSE
    event over the size limit.

    Not retryable: the upstream did the work (and may have billed it); the answer
    itself is unusable.
    """

    retryable = False


class UpstreamResponseTooLarge(UpstreamBadResponse):
    """The upstream's (non-streamed) body is over the configured limit (502).

    Not retryable: another worker would most likely send the same answer.
    """

    default_code = "upstream_response_too_large"
    retryable = False


class UpstreamRejected(UpstreamError):
    """The upstream refused the request with its own 4xx: the request is at fault.

    Rendered with ``upstream_status`` and ``error_type`` (the translator picks
    them: 400, 413 or 422 and ``invalid_request_error``); no ``code`` is null,
    as in OpenAI's own 400s. Not retryable: the same request would be refused
    again.
    """

    default_code = None
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.upstream_status = upstream_status
        self.upstream_error_type = error_type

    @property
    def status_code(self) -> int:
        return self.upstream_status

    def to_body(self) -> dict[str, Any]:
        body = super().to_body()
        body["error"]["type"] = self.upstream_error_type
        return body
