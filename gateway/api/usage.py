"""Usage reports: ``GET /admin/v1/usage`` (any tenant) and ``GET /v1/usage`` (the caller's).

Both read the ledger (what the usage buffer has already moved into SQL) and
answer ``{"object": "list", "data": [rows]}``. A tenant's rows carry
``group``, ``requests`` (billable), ``rejected``, the token counts and
``cost_usd`` only; the admin's add ``failed``, ``gpu_seconds``,
``internal_cost_usd`` and ``margin_usd`` (see :mod:`billing.queries`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.queries import GroupBy, UsageFilter, usage_totals
from gateway.api.admin import admin_guard
from gateway.auth import Authenticator
from gateway.database import translate_db_errors


def _filter(
    tenant_id: str | None,
    key_id: str | None,
    model: str | None,
    agent_type: str | None,
    start: dt.datetime | None,
    end: dt.datetime | None,
) -> UsageFilter:
    def utc(moment: dt.datetime | None) -> dt.datetime | None:
        if moment is None or moment.tzinfo is not None:
            return moment
        return moment.replace(tzinfo=dt.UTC)

    return UsageFilter(tenant_id, key_id, model, agent_type, utc(start), utc(end))


async def _report(
    engine: AsyncEngine, where: UsageFilter, group_by: GroupBy, *, operator: bool
) -> dict[str, Any]:
    with translate_db_errors("reading usage"):
        rows = await usage_totals(engine, where, group_by)
    data = [r.to_dict() if operator else r.tenant_view() for r in rows]
    return {"object": "list", "data": data}


KeyQ = Annotated[str | None, Query(description="Only this API key.")]
ModelQ = Annotated[str | None, Query(description="Only this public model.")]
AgentQ = Annotated[str | None, Query(description="Only this agent type.")]
FromQ = Annotated[dt.datetime | None, Query(alias="from", description="Start (inclusive).")]
ToQ = Annotated[dt.datetime | None, Query(alias="to", description="End (exclusive).")]
GroupQ = Annotated[GroupBy, Query(description="How rows are grouped.")]


def admin_router(engine: AsyncEngine, admin_token: str | None) -> APIRouter:
    """``GET /admin/v1/usage``."""
    api = APIRouter(
        prefix="/admin/v1", tags=["admin"], dependencies=[Depends(admin_guard(admin_token))]
    )

    @api.get("/usage", summary="Usage totals from the ledger, for any tenant")
    async def admin_usage(
        tenant_id: Annotated[str | None, Query(description="Only this tenant.")] = None,
        key_id: KeyQ = None,
        model: ModelQ = None,
        agent_type: AgentQ = None,
        start: FromQ = None,
        end: ToQ = None,
        group_by: GroupQ = GroupBy.DAY,
    ) -> dict[str, Any]:
        where = _filter(tenant_id, key_id, model, agent_type, start, end)
        return await _report(engine, where, group_by, operator=True)

    return api


def tenant_router(engine: AsyncEngine, auth: Authenticator) -> APIRouter:
    """``GET /v1/usage``: the caller's tenant only."""
    api = APIRouter(prefix="/v1", tags=["usage"])

    @api.get(
        "/usage",
        summary="Your tenant's usage totals: requests, rejected requests, tokens and cost",
    )
    async def tenant_usage(
        request: Request,
        key_id: KeyQ = None,
        model: ModelQ = None,
        agent_type: AgentQ = None,
        start: FromQ = None,
        end: ToQ = None,
        group_by: GroupQ = GroupBy.DAY,
    ) -> dict[str, Any]:
        principal = await auth.authenticate(request.headers.get("authorization"))
        if group_by == GroupBy.TENANT:
            group_by = GroupBy.DAY
        where = _filter(principal.tenant_id, key_id, model, agent_type, start, end)
        return await _report(engine, where, group_by, operator=False)

    return api
