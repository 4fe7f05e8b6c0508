"""Reading an idempotency key from a request, and naming and fingerprinting it.

Conventions:

* the key: header ``Idempotency-Key``, else ``metadata.idempotency_key`` in the
  body; 1 to ``max_key_length`` printable ASCII characters. When both are
  given they must agree (else 400);
* waiting: ``Prefer: wait=<seconds>`` (RFC 7240) caps how long a repeat waits
  for the first request still running; ``Prefer: wait=0`` means "do not wait,
  answer 409 with Retry-After at once";
* the fingerprint: SHA-256 of the canonical JSON (sorted keys, no whitespace)
  of the path, the client's body exactly as parsed, and any request context
  that changes what the upstream sees (the agent type header). It is taken
  before the gateway rewrites the body, and excludes nothing of it;
* the storage key: ``<prefix>{t:<tenant>}:i:<sha256(key)>``; hashing bounds its
  length and keeps the client's characters out of Redis key syntax, and the
  tenant hash tag keeps one tenant's keys in one Redis Cluster slot.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import orjson

from tollway.errors import InvalidRequest

HEADER = "idempotency-key"
PREFER = "prefer"
METADATA_FIELD = "idempotency_key"


def _valid(key: str, max_length: int) -> bool:
    return 0 < len(key) <= max_length and key.isascii() and key.isprintable()


def idempotency_key_of(
    headers: Mapping[str, str], body: Mapping[str, Any], *, max_length: int = 255
) -> str | None:
    """The request's idempotency key, or None when it has none; 400 when malformed."""
    header = headers.get(HEADER)
    metadata = body.get("metadata")
    from_body = metadata.get(METADATA_FIELD) if isinstance(metadata, dict) else None
    if from_body is not None and not isinstance(from_body, str):
        raise InvalidRequest(
            "metadata.idempotency_key must be a string.", param="metadata.idempotency_key"
        )
    if header is not None and from_body is not None and header != from_body:
        raise InvalidRequest(
            "The Idempotency-Key header and metadata.idempotency_key differ.",
            param="metadata.idempotency_key",
        )
    key = header if header is not None else from_body
    if key is None:
        return None
    if not _valid(key, max_length):
        raise InvalidRequest(
            f"An idempotency key must be 1 to {max_length} printable ASCII characters.",
            param="metadata.idempotency_key" if header is None else None,
            code="invalid_idempotency_key",
        )
    return key


def wait_preference(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``Prefer: wait=<seconds>``, or None when the client set none.

    Other preferences in the header are ignored, as is a malformed ``wait``
    (RFC 7240: a server ignores preferences it does not understand).
    """
    prefer = headers.get(PREFER)
    if not prefer:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        try:
            seconds = float(value.strip().strip('"'))
        except ValueError:
            return None
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None


def storage_key(prefix: str, tenant: str, key: str) -> str:
    """The store's key for ``key`` of ``tenant``."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{prefix}{{t:{tenant}}}:i:{digest}"


def request_fingerprint(
    path: str, body: Mapping[str, Any], context: Mapping[str, str] | None = None
) -> str:
    """SHA-256 (hex) of the canonical form of what the request asks the upstream for."""
    canonical = orjson.dumps(
        [path, body, dict(context) if context else {}],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()
