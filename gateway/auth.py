"""Authentication of ``/v1`` callers by bearer API key.

Keys are never stored or logged in plain text: the gateway keeps SHA-256
digests of high-entropy secrets and looks the caller's digest up, confirming
the match in constant time. Keys come from the database (tenants and keys made
through the admin API; see :mod:`gateway.tenancy.keycache`) and, optionally,
from the configuration file (``auth.keys``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Protocol, cast

from gateway.config import ApiKeyConfig
from gateway.tenancy.schemas import Budgets, Limits
from tollway.errors import AuthenticationFailed, PermissionDenied

KEY_PREFIX = "tw-"


@dataclass(slots=True, frozen=True)
class Principal:
    """Who is calling: tenant and key (never the secret), with their limits and scopes."""

    tenant_id: str
    key_id: str
    key_prefix: str = ""
    key_name: str = ""
    tenant_limits: Limits = field(default_factory=Limits)
    key_limits: Limits = field(default_factory=Limits)
    tenant_budgets: Budgets = field(default_factory=Budgets)
    key_budgets: Budgets = field(default_factory=Budgets)
    #: Models and agent types this key may use; None means any.
    allowed_models: frozenset[str] | None = None
    allowed_agent_types: frozenset[str] | None = None
    default_agent_type: str | None = None
    #: A compression policy overriding the agent type's (``"none"``: off).
    compression: str | None = None
    #: Unix time after which the key is expired; None means never.
    expires_at: float | None = None
    stripe_customer_id: str | None = None

    def check_model(self, model: str) -> None:
        """403 unless this key may use ``model``."""
        if self.allowed_models is not None and model not in self.allowed_models:
            raise PermissionDenied(
                f"This API key is not allowed to use the model `{model}`.",
                param="model",
                code="model_not_allowed",
            )

    def check_agent_type(self, agent_type: str) -> None:
        """403 unless this key may act as ``agent_type``."""
        if self.allowed_agent_types is not None and agent_type not in self.allowed_agent_types:
            raise PermissionDenied(
                f"This API key is not allowed to use the agent type `{agent_type}`.",
                code="agent_type_not_allowed",
            )

    def check_not_expired(self, now: float | None = None) -> None:
        """401 when the key has expired."""
        if self.expires_at is not None and (now or time.time()) >= self.expires_at:
            raise AuthenticationFailed("This API key has expired.", code="expired_api_key")


class Authenticator(Protocol):
    """Turns an ``Authorization`` header value into a :class:`Principal`."""

    async def authenticate(self, authorization: str | None) -> Principal:
        """Return the caller, or raise :class:`AuthenticationFailed` (401)."""
        ...


def hash_key(key: str) -> str:
    """Hex SHA-256 digest of an API key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A new API key: a visible prefix and 256 bits of randomness."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def bearer_token(authorization: str | None) -> str:
    """The token of a ``Bearer`` header; 401 when it is missing or malformed."""
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="missing_api_key",
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthenticationFailed(
            "Malformed Authorization header: expected 'Bearer YOUR_KEY'.",
            code="invalid_api_key",
        )
    return token


class DigestMemo:
    """The key digest of recently seen ``Authorization`` headers.

    A dict lookup instead of parsing the header and hashing the key on every request
    (a SHA-256 costs far more on a request's path, with cold caches, than in a tight
    loop). Bounded: cleared when ``max_entries`` headers are held, so a flood of
    random keys cannot grow it. Only well-formed headers are kept; the digest of a
    key that is not known is kept too (the key caches decide what it means).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._digests: dict[str, str] = {}

    def digest(self, authorization: str | None) -> str:
        """The SHA-256 digest of the header's bearer token; 401 when it is missing or
        malformed (see :func:`bearer_token`)."""
        if authorization is not None:
            known = self._digests.get(authorization)
            if known is not None:
                return known
        digest = hash_key(bearer_token(authorization))
        if len(self._digests) >= self.max_entries:
            self._digests.clear()
        self._digests[cast(str, authorization)] = digest
        return digest


def incorrect_key() -> AuthenticationFailed:
    """The 401 for a key that is not known (never says more than that)."""
    return AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")


class StaticKeys:
    """Keys from the configuration file (``auth.keys``), by SHA-256 digest."""

    def __init__(self, keys: list[ApiKeyConfig]) -> None:
        self._by_digest = {
            k.key_sha256: (
                k.key_sha256,
                Principal(tenant_id=k.tenant, key_id=f"static:{k.name}", key_name=k.name),
            )
            for k in keys
        }

    def get(self, digest: str) -> Principal | None:
        """The principal of a configured key, confirmed in constant time."""
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry[0], digest):
            return None
        return entry[1]


class StaticKeyAuthenticator:
    """Only the keys of the configuration file."""

    def __init__(self, keys: list[ApiKeyConfig]) -> None:
        self._keys = StaticKeys(keys)
        self._digests = DigestMemo()

    async def authenticate(self, authorization: str | None) -> Principal:
        principal = self._keys.get(self._digests.digest(authorization))
        if principal is None:
            raise incorrect_key()
        return principal


class OpenAuthenticator:
    """Authentication switched off (``auth.mode: none``): every caller is anonymous."""

    _anonymous = Principal(tenant_id="anonymous", key_id="none")

    async def authenticate(self, authorization: str | None) -> Principal:
        return self._anonymous
