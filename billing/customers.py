"""Which Stripe customer each tenant is: read from the tenants table.

The tenants table belongs to the gateway's tenancy package; billing reads only
its ``id`` and ``stripe_customer_id`` columns, by name, so neither package
imports the other.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.boundary import foreign_errors

_QUERY = text("SELECT id, stripe_customer_id FROM tenants WHERE stripe_customer_id IS NOT NULL")


async def customers_from_tenants(engine: AsyncEngine) -> dict[str, str]:
    """Tenant id → Stripe customer id, for every tenant that has one."""
    with foreign_errors("reading tenants' Stripe customers"):
        async with engine.connect() as conn:
            rows = await conn.execute(_QUERY)
            return {str(tenant): str(customer) for tenant, customer in rows}
