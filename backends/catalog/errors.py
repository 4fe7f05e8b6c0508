"""Provider failures as Tollway errors: litellm's exceptions and direct HTTP answers.

:func:`translate_litellm_errors` is the one place litellm's exceptions are
translated, by class (never by message text); :func:`error_from_status` maps the
HTTP answers of the ``direct_openai`` transport with the status table the pools
use too (:mod:`backends.upstream_errors`), and :func:`translate_http_errors` its
aiohttp exceptions. Both transports fail alike:

=====================================  =====================================  ======
provider says                          client sees                            status
=====================================  =====================================  ======
context window exceeded                ``context_length_exceeded``            400
content policy violation               ``content_policy_violation``           400
other bad request (other 4xx)          the provider's message and code        400
request too large (413, 414, 431)      ``request_too_large`` (direct only)    413
unprocessable (422)                    the provider's message and code        422
our key or account is refused          ``upstream_auth_failed``               502
(401 / 402 / 403 / 407)
model or route not found (404 / 405)   ``upstream_model_not_found``           502
rate limited (429)                     ``upstream_rate_limited``, Retry-After 429
overloaded (Anthropic 529) / 503       ``upstream_unavailable``               503
cannot connect                         ``upstream_unavailable``               503
timeout (408 / 504 / our timeouts)     ``upstream_timeout``                   504
internal error (500, 501, other 5xx)   ``upstream_server_error``              502
bad gateway (502), malformed answer    ``bad_gateway``                        502
stream cut mid-way                     ``upstream_stream_broken``             502
=====================================  =====================================  ======

The classes are the pools' (:mod:`tollway.errors`), with the same ``retryable``
flags: everything from the 502 (credentials) row down is retryable (another
route may succeed) except the provider's internal error
(:class:`~tollway.errors.UpstreamServerError`); the 4xx rows are
:class:`ProviderRejected` (an :class:`~tollway.errors.UpstreamRejected`, not
retryable).

A rejected key is the gateway's problem, not the client's: it is never relayed
as a 401, and the provider's message (which may quote part of the key) is not
passed on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx
import orjson

from backends.upstream_errors import (
    Wording,
    error_for_exception,
    error_for_status,
    parse_error_body,
    retry_after_of,
)
from tollway.errors import (
    TollwayError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamStreamBroken,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "ProviderRejected",
    "UpstreamRateLimited",
    "error_from_status",
    "retry_after_of",
    "translate_http_errors",
    "translate_litellm_errors",
]

log = logging.getLogger("tollway.catalog")

_MAX_CHAIN = 12


class ProviderRejected(UpstreamRejected):
    """The provider refused the request itself; relayed with its status, message and code."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(
            message, upstream_status=upstream_status, error_type=error_type, param=param, code=code
        )
        # Relayed as the provider sent it: no code is null, not the gateway's default.
        self.code = code


def rejected(status: int, message: str, *, code: str | None = None) -> ProviderRejected:
    """The provider refused the request because of the request itself (relayed)."""
    param = "messages" if code == "context_length_exceeded" else None
    return ProviderRejected(
        message or f"the provider refused the request ({status})",
        upstream_status=status,
        error_type="invalid_request_error",
        param=param,
        code=code,
    )


def credentials_rejected(label: str) -> UpstreamError:
    """The provider refused *our* credentials or account (a gateway-side failure)."""
    return UpstreamError(provider_wording(label).credentials, code="upstream_auth_failed")


def model_missing(label: str) -> UpstreamError:
    """The provider does not know the configured model (a gateway-side failure)."""
    return UpstreamError(provider_wording(label).model_missing, code="upstream_model_not_found")


def rate_limited(label: str, retry_after: float | None) -> UpstreamRateLimited:
    """The provider's rate limit was hit."""
    return UpstreamRateLimited(provider_wording(label).rate_limited, retry_after=retry_after)


def unavailable(label: str, why: str = "is unavailable") -> UpstreamUnavailable:
    """The provider is overloaded, down or unreachable."""
    return UpstreamUnavailable(f"{label}: the provider {why}")


def timed_out(label: str) -> UpstreamTimeout:
    """The provider did not answer in time."""
    return UpstreamTimeout(provider_wording(label).timed_out)


def failed(label: str, why: str) -> UpstreamError:
    """Any other provider failure (a bad gateway answer, a malformed response)."""
    return UpstreamError(f"{label}: the provider failed ({why})")


def server_error(label: str, why: str) -> UpstreamServerError:
    """The provider's internal error (500 and kin): not repeated, as for pools."""
    return UpstreamServerError(f"{label}: the provider failed ({why})")


def provider_wording(label: str) -> Wording:
    """What a client reads for a provider's answer on the route ``label``."""
    return Wording(
        rejected="the provider refused the request ({status})",
        credentials=f"{label}: the provider rejected the gateway's credentials",
        model_missing=f"{label}: the provider does not serve the configured model",
        rate_limited=f"{label}: the provider's rate limit was reached",
        timed_out=f"{label}: the provider timed out",
        unavailable=f"{label}: the provider is unavailable",
        overloaded=f"{label}: the provider is overloaded",
        failed=f"{label}: the provider failed (status {{status}})",
        server_error=f"{label}: the provider failed (status {{status}})",
        unreachable=f"{label}: the provider cannot be reached",
        stream_broken=f"{label}: the provider broke the stream",
        stream_closed=f"{label}: the provider broke the stream",
        connection_closed=f"{label}: the provider failed ({{name}})",
        failed_with=f"{label}: the provider failed ({{name}})",
        too_large=f"{label}: the provider's answer is over the size limit",
        bad_head=f"{label}: the provider's response head is over the limits",
        not_http=f"{label}: the provider's answer is not valid HTTP",
    )


def error_from_status(
    status: int, body: bytes, label: str, retry_after: float | None = None
) -> TollwayError:
    """The error for a non-2xx answer from an OpenAI-compatible provider.

    The status table is :mod:`backends.upstream_errors`' (shared with the pools).
    """
    return error_for_status(
        status,
        parse_error_body(body),
        provider_wording(label),
        retry_after=retry_after,
        rejection=ProviderRejected,
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it wraps, outermost first."""
    current: BaseException | None = exc
    for _ in range(_MAX_CHAIN):
        if current is None:
            return
        yield current
        current = current.__cause__ or current.__context__


def _json_error(value: object) -> tuple[str, str | None] | None:
    """(message, code) when ``value`` is an error body (JSON text or a parsed dict)."""
    data: object = value
    if isinstance(value, bytes | str):
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(data, dict):
        return None
    nested = data.get("error")
    err = nested if isinstance(nested, dict) else data
    message = err.get("message")
    if not isinstance(message, str) or not message:
        return None
    code = err.get("code")
    return message, code if isinstance(code, str) else None


def _relayed(exc: BaseException) -> tuple[str, str | None]:
    """The provider's error message and code, from the exceptions litellm raised and wrapped.

    litellm's message adds its own prefixes; the provider's body is kept on the
    exception (``body``), on the HTTP response it carries, or as the
    ``message`` of the provider exception it wraps. Only JSON error bodies count.
    """
    for current in _chain(exc):
        # ``response`` is read from the instance: litellm's property raises when unset.
        found = (
            _json_error(getattr(current, "body", None))
            or _json_error(_content_of(getattr(current, "__dict__", {}).get("response")))
            or _json_error(getattr(current, "message", None))
        )
        if found is not None:
            return found
    return "", None


def _content_of(response: object) -> bytes | None:
    try:
        content = getattr(response, "content", None)
    except httpx.ResponseNotRead:
        return None
    return content if isinstance(content, bytes) else None


def _response_headers(exc: BaseException) -> Any:
    for current in _chain(exc):
        headers = getattr(current, "litellm_response_headers", None) or getattr(
            current, "headers", None
        )
        if headers is not None:
            return headers
    return None


def _transport_failure(label: str, exc: BaseException) -> TollwayError | None:
    """A timeout or refused connection found among the exceptions ``exc`` wraps."""
    cause = exc.__cause__ or exc.__context__
    for _ in range(_MAX_CHAIN):
        if cause is None:
            return None
        if isinstance(cause, httpx.TimeoutException | TimeoutError):
            return timed_out(label)
        if isinstance(cause, httpx.ConnectError | aiohttp.ClientConnectorError | ConnectionError):
            return unavailable(label, "cannot be reached")
        cause = cause.__cause__ or cause.__context__
    return None


@contextmanager
def translate_litellm_errors(litellm: Any, label: str) -> Iterator[None]:
    """Translate litellm's (and openai's) exceptions raised inside into Tollway's errors.

    ``litellm`` is the imported module (it is imported lazily); ``label`` names
    the backend in messages (``catalog:gpt-4o-mini``).
    """
    try:
        yield
    except TollwayError:
        raise
    except Exception as exc:
        raise _translate(litellm, label, exc) from exc


def _translate(litellm: Any, label: str, exc: Exception) -> TollwayError:
    x = litellm.exceptions
    if isinstance(exc, x.ContextWindowExceededError):
        return rejected(400, _relayed(exc)[0], code="context_length_exceeded")
    if isinstance(exc, x.ContentPolicyViolationError):
        return rejected(400, _relayed(exc)[0], code="content_policy_violation")
    if isinstance(exc, x.PaymentRequiredError):
        return credentials_rejected(label)
    if isinstance(exc, x.BadRequestError | x.UnprocessableEntityError):
        status = 422 if isinstance(exc, x.UnprocessableEntityError) else 400
        message, code = _relayed(exc)
        return rejected(status, message, code=code)
    if isinstance(exc, x.AuthenticationError | x.PermissionDeniedError):
        return credentials_rejected(label)
    if isinstance(exc, x.NotFoundError):
        return model_missing(label)
    if isinstance(exc, x.RateLimitError):
        return rate_limited(label, retry_after_of(_response_headers(exc)))
    if isinstance(exc, x.Timeout):
        return timed_out(label)
    if isinstance(exc, x.MidStreamFallbackError):
        return UpstreamStreamBroken(f"{label}: the provider broke the stream")
    if isinstance(exc, x.ServiceUnavailableError):
        return unavailable(label)
    # litellm reports a refused connection as a 500; the exceptions it wraps say what happened.
    transport_failure = _transport_failure(label, exc)
    if transport_failure is not None:
        return transport_failure
    if isinstance(exc, x.InternalServerError):
        # Anthropic's 529 "overloaded" arrives as an InternalServerError carrying it.
        if getattr(exc, "provider_status_code", None) == 529:
            return unavailable(label, "is overloaded")
        return server_error(label, "internal error")
    if isinstance(exc, x.APIConnectionError):
        return unavailable(label, "cannot be reached")
    if isinstance(exc, x.BadGatewayError | x.APIError | x.APIResponseValidationError):
        return failed(label, type(exc).__name__)
    log.error("%s: unexpected %s from litellm", label, type(exc).__name__, exc_info=exc)
    return failed(label, type(exc).__name__)


@contextmanager
def translate_http_errors(label: str, *, streaming: bool = False) -> Iterator[None]:
    """Translate aiohttp and timeout errors of the ``direct_openai`` transport.

    The table is :func:`backends.upstream_errors.error_for_exception` (shared
    with the pools); anything it does not know propagates unchanged.
    """
    try:
        yield
    except TollwayError:
        raise
    except Exception as exc:
        error = error_for_exception(exc, provider_wording(label), streaming=streaming)
        if error is None:
            raise
        raise error from exc
