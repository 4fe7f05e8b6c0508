"""Which Stripe customer each tenant is: read from (and added to) the tenants table.

The tenants table belongs to the gateway's tenancy package; billing reads and
writes only its ``id``, ``stripe_customer_id`` and ``updated_at`` columns, by
name, so neither package imports the other.

A ``--customers`` file given to ``tollway billing export`` is merged into the
table (:func:`merge_customers`): tenants without a customer get the file's,
so every later export and ``reconcile`` sees one mapping. A file entry that
contradicts a stored customer is refused (changing a paying tenant's customer
is ``tollway tenants update --stripe-customer``), as is an unknown tenant id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.boundary import foreign_errors
from tollway.errors import InvalidRequest

_QUERY = text("SELECT id, stripe_customer_id FROM tenants WHERE stripe_customer_id IS NOT NULL")
_ALL = text("SELECT id, stripe_customer_id FROM tenants")
_SET = text(
    "UPDATE tenants SET stripe_customer_id = :customer, updated_at = :now "
    "WHERE id = :tenant AND stripe_customer_id IS NULL"
).bindparams(bindparam("now", type_=DateTime(timezone=True)))


async def customers_from_tenants(engine: AsyncEngine) -> dict[str, str]:
    """Tenant id → Stripe customer id, for every tenant that has one."""
    with foreign_errors("reading tenants' Stripe customers"):
        async with engine.connect() as conn:
            rows = await conn.execute(_QUERY)
            return {str(tenant): str(customer) for tenant, customer in rows}


async def merge_customers(
    engine: AsyncEngine, extra: Mapping[str, str], *, store: bool
) -> dict[str, str]:
    """The stored mapping with ``extra`` merged in; with ``store``, written to the table.

    Refuses (:class:`~tollway.errors.InvalidRequest`, nothing written) an unknown
    tenant id or a tenant whose stored customer differs from ``extra``'s.
    """
    with foreign_errors("merging tenants' Stripe customers"):
        async with engine.begin() as conn:
            stored = {str(t): c for t, c in await conn.execute(_ALL)}
            unknown = sorted(set(extra) - set(stored))
            if unknown:
                raise InvalidRequest(f"no tenant with id {unknown[0]!r} (in the customers file)")
            for tenant, customer in sorted(extra.items()):
                if stored[tenant] is not None and stored[tenant] != customer:
                    raise InvalidRequest(
                        f"tenant {tenant!r} is Stripe customer {stored[tenant]!r}, the customers "
                        f"file says {customer!r}; change it with `tollway tenants update "
                        f"{tenant} --stripe-customer {customer}` first"
                    )
            new = {t: c for t, c in extra.items() if stored[t] is None}
            if store and new:
                now = dt.datetime.now(dt.UTC)
                await conn.execute(
                    _SET, [{"tenant": t, "customer": c, "now": now} for t, c in new.items()]
                )
    merged = {str(t): str(c) for t, c in stored.items() if c is not None}
    return {**merged, **new}
