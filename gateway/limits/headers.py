"""OpenAI's ``x-ratelimit-*`` response headers.

Limits and remaining counts are integers; resets are durations written as
OpenAI writes them (Go's duration format): ``"20ms"``, ``"1s"``, ``"1.5s"``,
``"6m0s"``, ``"1h0m0s"``.
"""

from __future__ import annotations

from gateway.limits.specs import RateStatus, Ticket


def format_duration(ms: int) -> str:
    """A duration in milliseconds as OpenAI writes it: ``"20ms"``, ``"1.5s"``, ``"6m0s"``."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    text = f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def ratelimit_headers(requests: RateStatus | None, tokens: RateStatus | None) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers for the request and token trios that apply."""
    headers: dict[str, str] = {}
    if requests is not None:
        headers["x-ratelimit-limit-requests"] = str(requests.limit)
        headers["x-ratelimit-remaining-requests"] = str(requests.remaining)
        headers["x-ratelimit-reset-requests"] = format_duration(requests.reset_ms)
    if tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(tokens.limit)
        headers["x-ratelimit-remaining-tokens"] = str(tokens.remaining)
        headers["x-ratelimit-reset-tokens"] = format_duration(tokens.reset_ms)
    return headers


def ticket_headers(ticket: Ticket) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of an admitted request (empty when no rate limit applies)."""
    return ratelimit_headers(ticket.requests, ticket.tokens)
