"""Agent types and sessions: who is calling, as what, and in which conversation.

The agent type comes from the ``X-Agent-Type`` header, else
``metadata.agent_type``, else a ``model`` that names an agent type (an alias).
Named explicitly, its profile decides where the request goes. Otherwise the
client's ``model`` decides, and the agent type is the key's default (or the
configured default); a ``model`` that is not a public model is 404
``model_not_found`` unless that default profile sets ``serve_unknown_models``.
The session comes from ``X-Session-Id``, else ``metadata.session_id``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.auth import Principal
from gateway.config import AgentTypeConfig, RequestTimeouts, RoutingConfig
from tollway.errors import InvalidRequest, UnknownAgentType
from tollway.output_tokens import OUTPUT_TOKEN_FIELDS, effective_max_tokens

_TOLLWAY_METADATA = ("agent_type", "session_id", "idempotency_key")
MAX_ID_LENGTH = 256


@dataclass(slots=True, frozen=True)
class AgentContext:
    """The resolved agent type, its profile, the public model and the session."""

    agent_type: str | None
    profile: AgentTypeConfig | None
    model: str
    session_id: str | None


def _metadata_value(body: dict[str, Any], key: str) -> str | None:
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        return None
    value = metadata.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InvalidRequest(
            f"'metadata.{key}' must be a non-empty string of at most {MAX_ID_LENGTH} characters",
            param=f"metadata.{key}",
            code="invalid_value",
        )
    return value


def _strip_metadata(body: dict[str, Any]) -> None:
    """Keep Tollway's own metadata keys away from the upstream."""
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and any(k in metadata for k in _TOLLWAY_METADATA):
        rest = {k: v for k, v in metadata.items() if k not in _TOLLWAY_METADATA}
        if rest:
            body["metadata"] = rest
        else:
            del body["metadata"]


class AgentResolver:
    """Resolves agent types from requests against the configured profiles."""

    def __init__(
        self,
        profiles: dict[str, AgentTypeConfig],
        routing: RoutingConfig,
        models: frozenset[str],
    ) -> None:
        self.profiles = profiles
        self.routing = routing
        self.models = models

    def resolve(
        self,
        headers: Mapping[str, str],
        body: dict[str, Any],
        model: str,
        principal: Principal,
    ) -> AgentContext:
        """The agent context of one request; strips Tollway's metadata keys from ``body``."""
        explicit = headers.get("x-agent-type") or _metadata_value(body, "agent_type")
        if explicit is None and model in self.profiles:
            explicit = model
        session = headers.get("x-session-id") or _metadata_value(body, "session_id")
        if session is not None and len(session) > MAX_ID_LENGTH:
            raise InvalidRequest(
                f"X-Session-Id is longer than {MAX_ID_LENGTH} characters", code="invalid_value"
            )
        _strip_metadata(body)
        if explicit is not None:
            name = self._known(explicit)
            principal.check_agent_type(name)
            chosen = self.profiles[name]
            return AgentContext(name, chosen, chosen.model, session)
        implicit = principal.default_agent_type or self.routing.default_agent_type
        if implicit is not None and implicit not in self.profiles:
            implicit = self._known(implicit)
        if implicit is not None:
            principal.check_agent_type(implicit)
        profile = self.profiles.get(implicit) if implicit else None
        if model not in self.models and profile is not None and profile.serve_unknown_models:
            model = profile.model  # opted in; otherwise the registry answers 404
        return AgentContext(implicit, profile, model, session)

    def _known(self, name: str) -> str:
        if name in self.profiles:
            return name
        fallback = self.routing.default_agent_type
        if self.routing.unknown_agent_type == "default" and fallback is not None:
            return fallback
        raise UnknownAgentType(
            f"Unknown agent type '{name}'. Known agent types: "
            f"{', '.join(sorted(self.profiles)) or 'none'}.",
            param="agent_type",
        )


def apply_max_tokens(body: dict[str, Any], profile: AgentTypeConfig | None) -> int | None:
    """Apply the profile's default and maximum output tokens; return the effective limit.

    The effective limit is :func:`~tollway.output_tokens.effective_max_tokens`
    (SGLang's ``max_tokens or max_completion_tokens``). The profile's maximum
    caps *both* fields, since a worker generates with whichever it prefers;
    its default fills ``max_completion_tokens`` when only that key is present
    (as ``null``), else ``max_tokens``.
    """
    if profile is not None:
        if effective_max_tokens(body) is None and profile.default_max_tokens is not None:
            field = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
            body[field] = profile.default_max_tokens
        cap = profile.max_tokens
        if cap is not None:
            for field in OUTPUT_TOKEN_FIELDS:
                value = body.get(field)
                if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                    body[field] = cap
    return effective_max_tokens(body)


def request_timeouts(
    model: RequestTimeouts | None, profile: AgentTypeConfig | None
) -> tuple[float | None, float | None]:
    """First-byte and total timeouts: the agent type's, else the model's, else the pool's
    (``None``: the pool's own)."""
    chosen = [t for t in (profile.timeouts if profile else None, model) if t is not None]
    first_byte = next((t.first_byte_s for t in chosen if t.first_byte_s is not None), None)
    total = next((t.total_s for t in chosen if t.total_s is not None), None)
    return first_byte, total


def prefix_affinity(body: dict[str, Any]) -> str | None:
    """An affinity key for a conversation without a session id.

    A hash of the messages up to and including the first user message: every
    turn of one conversation shares it, so its turns land on the worker that
    holds its prefix. Legacy completions hash the first 512 characters of the
    prompt.
    """
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        cut = len(messages)
        for i, message in enumerate(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                cut = i + 1
                break
        head = orjson.dumps(messages[:cut])
    elif isinstance(body.get("prompt"), str):
        head = body["prompt"][:512].encode("utf-8")
    else:
        return None
    return "p:" + hashlib.blake2b(head, digest_size=12).hexdigest()
