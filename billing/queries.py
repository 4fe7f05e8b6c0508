"""Usage queries: ledger totals with filters, grouped by time, model, agent type, ...

Backs ``GET /admin/v1/usage`` (any tenant) and ``GET /v1/usage`` (the caller's
tenant). Times are bucketed with integer division of epoch microseconds, which
SQLite and PostgreSQL compute identically.

What counts (the same rules as Stripe export quantities, :mod:`billing.stripe_export`):

* ``requests``: the client's billable requests, the ledger rows whose status is in
  :data:`~billing.usage.BILLABLE_STATUSES` (``ok``, ``client_cancelled``) and that
  are not a call the gateway made for another request (``parent_request_id``);
* ``rejected``: requests refused before any model work (status ``rejected``);
* ``failed`` (operator view): upstream errors and streams cut by a gateway crash;
* tokens: summed over billable rows, rolling-summary calls included;
* ``cost_usd``: what the price book charged, over every row;
* ``gpu_seconds``, ``internal_cost_usd``, ``margin_usd`` (operator view): every row.

Provisional rows (streams in flight) count nowhere until their final record lands.
:meth:`UsageRow.tenant_view` is what a tenant is shown: no operator numbers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.boundary import foreign_errors
from billing.money import micros_to_usd_str
from billing.tables import usage_ledger
from billing.usage import (
    BILLABLE_STATUSES,
    REFUSED_STATUSES,
    UsageStatus,
    from_epoch_us,
    to_epoch_us,
)

_HOUR_US = 3_600_000_000
_DAY_US = 24 * _HOUR_US


class GroupBy(StrEnum):
    """What usage rows are grouped by."""

    DAY = "day"
    HOUR = "hour"
    MODEL = "model"
    AGENT_TYPE = "agent_type"
    POOL = "pool"
    KEY = "key"
    TENANT = "tenant"


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Which ledger rows count; ``start`` inclusive, ``end`` exclusive (aware datetimes)."""

    tenant_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    agent_type: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None


#: The fields of a usage row a tenant may see (the operator sees all of them).
TENANT_FIELDS: tuple[str, ...] = (
    "group",
    "requests",
    "rejected",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "cost_usd",
)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Totals of one group. Money is a decimal USD string; ``group`` is None for
    rows without the grouped field (for example catalog requests grouped by pool).
    See the module docstring for what each count covers."""

    group: str | None
    requests: int
    rejected: int
    failed: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_usd: str
    gpu_seconds: float
    internal_cost_usd: str
    margin_usd: str

    def to_dict(self) -> dict[str, Any]:
        """Every field: the operator's view."""
        return asdict(self)

    def tenant_view(self) -> dict[str, Any]:
        """What the tenant sees: tokens, requests and its cost, never the operator's
        cost, margin or GPU time."""
        return {name: getattr(self, name) for name in TENANT_FIELDS}


def _conditions(where: UsageFilter) -> list[ColumnElement[bool]]:
    c = usage_ledger.c
    conditions: list[ColumnElement[bool]] = []
    if where.tenant_id is not None:
        conditions.append(c.tenant_id == where.tenant_id)
    if where.key_id is not None:
        conditions.append(c.key_id == where.key_id)
    if where.model is not None:
        conditions.append(c.model == where.model)
    if where.agent_type is not None:
        conditions.append(c.agent_type == where.agent_type)
    if where.start is not None:
        conditions.append(c.created_at_us >= to_epoch_us(where.start))
    if where.end is not None:
        conditions.append(c.created_at_us < to_epoch_us(where.end))
    return conditions


def _group_column(group_by: GroupBy) -> ColumnElement[Any]:
    c = usage_ledger.c
    if group_by is GroupBy.DAY:
        return c.created_at_us // literal(_DAY_US)
    if group_by is GroupBy.HOUR:
        return c.created_at_us // literal(_HOUR_US)
    return {
        GroupBy.MODEL: c.model,
        GroupBy.AGENT_TYPE: c.agent_type,
        GroupBy.POOL: c.pool,
        GroupBy.KEY: c.key_id,
        GroupBy.TENANT: c.tenant_id,
    }[group_by]


def _label(group_by: GroupBy, value: Any) -> str | None:
    if value is None:
        return None
    if group_by is GroupBy.DAY:
        return from_epoch_us(int(value) * _DAY_US).date().isoformat()
    if group_by is GroupBy.HOUR:
        return from_epoch_us(int(value) * _HOUR_US).isoformat().replace("+00:00", "Z")
    return str(value)


async def usage_totals(
    engine: AsyncEngine, where: UsageFilter, group_by: GroupBy = GroupBy.DAY
) -> list[UsageRow]:
    """Usage totals of the filtered ledger rows, one row per group, ordered by group."""
    c = usage_ledger.c
    key = _group_column(group_by).label("grp")
    billable = c.status.in_([status.value for status in BILLABLE_STATUSES])
    refused = c.status.in_([status.value for status in REFUSED_STATUSES])

    def count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    def sum_if(condition: ColumnElement[bool], column: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((condition, column), else_=0)), 0)

    query = (
        select(
            key,
            count_if(and_(billable, c.parent_request_id.is_(None))).label("requests"),
            count_if(refused).label("rejected"),
            count_if(and_(~billable, ~refused)).label("failed"),
            sum_if(billable, c.prompt_tokens).label("prompt_tokens"),
            sum_if(billable, c.cached_tokens).label("cached_tokens"),
            sum_if(billable, c.completion_tokens).label("completion_tokens"),
            func.coalesce(func.sum(c.cost_micros), 0).label("cost_micros"),
            func.coalesce(func.sum(c.gpu_seconds), 0.0).label("gpu_seconds"),
            func.coalesce(func.sum(c.internal_cost_micros), 0).label("internal_micros"),
        )
        .where(c.status != UsageStatus.PROVISIONAL.value, *_conditions(where))
        .group_by(key)
        .order_by(key)
    )
    with foreign_errors("querying usage"):
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
    result = []
    for row in rows:
        cost, internal = int(row.cost_micros), int(row.internal_micros)
        result.append(
            UsageRow(
                group=_label(group_by, row.grp),
                requests=int(row.requests),
                rejected=int(row.rejected),
                failed=int(row.failed),
                prompt_tokens=int(row.prompt_tokens),
                cached_tokens=int(row.cached_tokens),
                completion_tokens=int(row.completion_tokens),
                cost_usd=micros_to_usd_str(cost),
                gpu_seconds=round(float(row.gpu_seconds), 6),
                internal_cost_usd=micros_to_usd_str(internal),
                margin_usd=micros_to_usd_str(cost - internal),
            )
        )
    return result
