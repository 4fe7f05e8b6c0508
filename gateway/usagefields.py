"""The fields metering writes about a request, read off its record and route.

A usage record's identity (:func:`request_fields`: which request, whose, and
where it went: the pool of a ``pool:<pool>/<worker>`` route, the entry of a
``catalog:<entry>`` one), shared by the final and the provisional record
(:mod:`gateway.metering`); and what a response's ``usage`` object gains
(:func:`usage_fields`: its cost).
"""

from __future__ import annotations

from typing import Any

from billing.cost import CostQuote
from billing.money import micros_to_usd_float
from gateway.outcome import RequestRecord


def request_fields(record: RequestRecord, pool: str | None) -> dict[str, Any]:
    """The usage record's fields that say which request it is and whose."""
    return {
        "request_id": record.request_id,
        "tenant_id": record.tenant_id or "",
        "key_id": record.key_id or "",
        "model": record.model or "",
        "created_at": record.created_at,
        "agent_type": record.agent_type,
        "session_id": record.session_id,
        "pool": pool,
        "worker": record.worker,
        "catalog_model": catalog_of(record.route),
        "tokens_before_compression": record.tokens_before_compression,
        "tokens_after_compression": record.tokens_after_compression,
    }


def pool_of(route: str | None) -> str | None:
    """The pool a route names (``pool:<pool>/<worker>``), else None."""
    if route and route.startswith("pool:"):
        return route[5:].split("/", 1)[0]
    return None


def catalog_of(route: str | None) -> str | None:
    """The catalog entry a route names (``catalog:<entry>``), else None."""
    if route and route.startswith("catalog:"):
        return route[8:]
    return None


def usage_fields(quote: CostQuote) -> dict[str, Any]:
    """What metering adds to the response's ``usage`` object (USD, as OpenRouter does)."""
    return {"cost": micros_to_usd_float(quote.cost_micros)}
