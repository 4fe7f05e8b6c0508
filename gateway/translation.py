"""The seam by which an API served by translation enters the chat pipeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.auth import Principal


@dataclass(slots=True, frozen=True)
class Translation:
    """How an API served by translation to chat completions enters the pipeline.

    ``endpoint`` names the request in its record (the access log); ``authorization``
    is the caller's credential as an ``Authorization`` value (the edge may read it
    from another header, such as ``x-api-key``); ``to_chat`` turns the parsed body
    into a chat completions body (raising :class:`~tollway.errors.InvalidRequest`
    for what it cannot translate). ``load``, when given, runs first with the parsed
    body and the authenticated caller: for an API whose translation reads the tenant's
    stored state (the Responses API's ``previous_response_id``). ``asked``, when
    given, is the body an ``Idempotency-Key``'s fingerprint covers instead of the
    chat body: what the client sent, when the chat body also holds stored state
    that the first attempt changed (a conversation's items). Everything after them
    is the chat pipeline.
    """

    endpoint: str
    authorization: str | None
    to_chat: Callable[[dict[str, Any]], dict[str, Any]]
    load: Callable[[dict[str, Any], Principal], Awaitable[None]] | None = None
    asked: Callable[[], dict[str, Any]] | None = None
