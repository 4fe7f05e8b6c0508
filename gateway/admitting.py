"""Rate limits and budgets on the request path: admit before forwarding, settle after.

Turns a principal's limits and budgets into one :class:`AdmissionRequest` (one
Redis round trip, or none when nothing applies), reserving the request's
maximum cost; settles with the real tokens and cost once the request ends,
in the background so the response never waits for it. With a
:class:`~gateway.speculation.SpeculationGate`, :meth:`Admitter.speculate` starts
an admission without waiting for it, so the caller can dispatch meanwhile.

The pipeline's admission stage is :meth:`Admitter.admit_request`; a
speculative admission is then answered by :meth:`Admitter.conclude` (or by
:meth:`Admitter.answer` when the upstream call failed, or :meth:`Admitter.abandon`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from decimal import Decimal
from typing import Any

from backends.base import UpstreamResponse
from billing.money import usd_to_micros
from gateway.auth import Principal
from gateway.config import AgentLimitsConfig, AgentTypeConfig
from gateway.limits import AdmissionRequest, BudgetSpec, LimitSpec, Ticket
from gateway.limits.admission import Admission
from gateway.metering import Metering
from gateway.outcome import RequestRecord
from gateway.speculation import SpeculationGate
from gateway.tenancy.schemas import Budgets, Limits
from gateway.tracing import Tracer
from tollway.eager import start_eagerly
from tollway.errors import TollwayError

#: Speculative admissions in flight below which the next one starts eagerly.
EAGER_BELOW = 4

#: An admission started by :meth:`Admitter.speculate`; await it for the ticket (or the 429).
Pending = asyncio.Future[Ticket | None]

log = logging.getLogger("tollway.limits")


def limit_spec(limits: Limits) -> LimitSpec:
    """The engine's view of a tenant's or key's rate limits."""
    return LimitSpec(rpm=limits.rpm, tpm=limits.tpm, max_concurrent=limits.max_concurrent)


def budget_spec(budgets: Budgets) -> BudgetSpec:
    """The engine's view of budgets, in micro-USD."""

    def micros(usd: Decimal | None) -> int | None:
        return None if usd is None else usd_to_micros(usd)

    return BudgetSpec(
        daily_micro_usd=micros(budgets.daily_usd), monthly_micro_usd=micros(budgets.monthly_usd)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Specs:
    tenant_limits: LimitSpec
    key_limits: LimitSpec
    tenant_budget: BudgetSpec
    key_budget: BudgetSpec
    has_budget: bool
    has_any: bool


def _specs_of(principal: Principal) -> _Specs:
    tl, kl = limit_spec(principal.tenant_limits), limit_spec(principal.key_limits)
    tb, kb = budget_spec(principal.tenant_budgets), budget_spec(principal.key_budgets)
    has_budget = any(
        v is not None
        for v in (
            tb.daily_micro_usd,
            tb.monthly_micro_usd,
            kb.daily_micro_usd,
            kb.monthly_micro_usd,
        )
    )
    has_limits = any(
        v is not None for spec in (tl, kl) for v in (spec.rpm, spec.tpm, spec.max_concurrent)
    )
    return _Specs(tl, kl, tb, kb, has_budget, has_budget or has_limits)


class Admitter:
    """Admits requests against their limits and settles them afterwards."""

    def __init__(
        self,
        admission: Admission,
        metering: Metering | None,
        *,
        speculation: SpeculationGate | None = None,
    ) -> None:
        self.admission = admission
        self.metering = metering
        self.speculation = speculation
        self._settling: set[asyncio.Task[None]] = set()
        #: Speculative admissions on their way to Redis (see :meth:`speculate`).
        self.in_flight = 0
        # The engine's view of each principal, computed once (principals are immutable;
        # a changed key gets a new principal object from the key cache).
        self._specs: dict[tuple[str, str], tuple[Principal, _Specs]] = {}

    def _specs_for(self, principal: Principal) -> _Specs:
        key = (principal.tenant_id, principal.key_id)
        cached = self._specs.get(key)
        if cached is not None and cached[0] is principal:
            return cached[1]
        if len(self._specs) > 100_000:
            self._specs.clear()
        specs = _specs_of(principal)
        self._specs[key] = (principal, specs)
        return specs

    def _max_cost(self, record: RequestRecord, prompt: int, output: int) -> int:
        """The most this request can cost: its prompt and all of ``max_tokens``."""
        if self.metering is None:
            return 0
        return self.metering.max_cost(record, prompt, output)

    async def admit_request(
        self,
        record: RequestRecord,
        principal: Principal,
        profile: AgentTypeConfig | None,
        pools_only: bool,
        prompt: int,
        output: int,
        tracer: Tracer,
    ) -> Pending | None:
        """The pipeline's admission stage: the key's and tenant's limits and budgets
        (``record.ticket``), then the agent type's (``record.agent_ticket``).

        Speculative when allowed, and only when every route is a self-hosted pool
        (``pools_only``: a hosted provider may bill a request we then drop) and the
        agent type sets no limits: then returns the admission still in flight, for
        :meth:`conclude` once the upstream answered.
        """
        pending: Pending | None = None
        if pools_only and (profile is None or profile.limits is None):
            pending = self.speculate(record, principal, prompt, output)
        if pending is None:
            with tracer.span("tollway.admit"):
                record.ticket = await self.admit(record, principal, prompt, output)
        if profile is not None and profile.limits is not None:
            record.agent_ticket = await self.admit_agent_type(
                record, principal.tenant_id, profile.limits, prompt + output
            )
        return pending

    async def answer(self, pending: Pending, record: RequestRecord) -> Ticket | None:
        """A speculative admission's ticket (or its refusal). Shielded: a client that goes
        away must not cancel an admission Redis may already have applied; its ticket
        then goes to :meth:`abandon`, which settles it when it arrives."""
        if pending.done():
            return pending.result()
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            self.abandon(pending, record)
            raise

    async def conclude(
        self, pending: Pending, upstream: UpstreamResponse, record: RequestRecord
    ) -> None:
        """Wait for a speculative admission (``record.ticket``); on a refusal drop the
        upstream's answer (its connection and KV reservation released) and raise it."""
        try:
            record.ticket = await self.answer(pending, record)
        except BaseException:
            upstream.gpu_seconds()
            await upstream.aclose()
            raise

    async def admit(
        self, record: RequestRecord, principal: Principal, prompt: int, output: int
    ) -> Ticket | None:
        """Admit (or raise 429/503); None when no limit or budget applies at all."""
        specs = self._specs_for(principal)
        if not specs.has_any:
            return None
        return await self._admit(record, principal, specs, prompt, output, speculative=False)

    def speculate(
        self, record: RequestRecord, principal: Principal, prompt: int, output: int
    ) -> Pending | None:
        """Start the admission without waiting for it, when the speculation gate allows
        (see :mod:`gateway.speculation`); None means: call :meth:`admit` and wait.

        The caller may dispatch meanwhile but must send nothing to the client before
        the returned future has answered, and hands it to :meth:`abandon` if it gives up.
        """
        gate = self.speculation
        if gate is None:
            return None
        specs = self._specs_for(principal)
        if not specs.has_any:
            return None
        key = (principal.tenant_id, principal.key_id)
        if not gate.try_speculate(key, prompt + output):
            return None
        record.speculative = True
        admission = self._admit(record, principal, specs, prompt, output, speculative=True)
        # When few requests are in flight, start the admission in this step, so its script
        # leaves for Redis with this turn's writes instead of a turn later (lower latency);
        # under load, a task, so that more admissions share each write and each reply.
        pending: Pending = (
            start_eagerly(admission)
            if self.in_flight < EAGER_BELOW
            else asyncio.ensure_future(admission)
        )
        self.in_flight += 1
        pending.add_done_callback(self._admission_done)
        return pending

    def _admission_done(self, _: asyncio.Future[Any]) -> None:
        self.in_flight -= 1

    def abandon(self, pending: Pending, record: RequestRecord) -> None:
        """The request ended before its speculative admission was awaited: settle the
        ticket whenever it arrives (nothing to do for a refusal)."""
        if pending.done():
            self._settle_done(pending, record)
        else:
            pending.add_done_callback(lambda done: self._settle_done(done, record))

    def _settle_done(self, pending: Pending, record: RequestRecord) -> None:
        if pending.cancelled() or pending.exception() is not None:
            return
        ticket = pending.result()
        if ticket is not None:
            self.settle(ticket, record)

    async def _admit(
        self,
        record: RequestRecord,
        principal: Principal,
        specs: _Specs,
        prompt: int,
        output: int,
        *,
        speculative: bool,
    ) -> Ticket:
        request = AdmissionRequest(
            request_id=record.request_id,
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            tenant_limits=specs.tenant_limits,
            key_limits=specs.key_limits,
            tenant_budget=specs.tenant_budget,
            key_budget=specs.key_budget,
            estimated_tokens=prompt + output,
            reserve_micro_usd=self._max_cost(record, prompt, output) if specs.has_budget else 0,
        )
        gate = self.speculation
        if gate is None:
            return await self.admission.admit(request)
        key = (principal.tenant_id, principal.key_id)
        try:
            ticket = await self.admission.admit(request)
        except TollwayError:
            gate.refused(key, speculative=speculative)
            raise
        gate.admitted(key, ticket)
        return ticket

    async def admit_agent_type(
        self, record: RequestRecord, tenant_id: str, limits: AgentLimitsConfig, tokens: int
    ) -> Ticket:
        """Admit against an agent type's per-tenant limits (a scope of its own)."""
        spec = LimitSpec(rpm=limits.rpm, tpm=limits.tpm, max_concurrent=limits.max_concurrent)
        request = AdmissionRequest(
            request_id=record.request_id,
            tenant_id=tenant_id,
            key_id=f"agent-type:{record.agent_type}",
            key_limits=spec,
            estimated_tokens=tokens,
        )
        return await self.admission.admit(request)

    def settle(self, ticket: Ticket, record: RequestRecord) -> None:
        """Settle in the background with the request's real tokens and cost."""
        prompt, _, completion = record.tokens()
        task = asyncio.create_task(self._settle(ticket, prompt + completion, record.cost_micros))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, ticket: Ticket, tokens: int, cost: int) -> None:
        try:
            await self.admission.settle(ticket, tokens, cost)
        except TollwayError as exc:
            log.warning("settling %s failed: %s", ticket.request_id, exc.message)

    async def drain(self) -> None:
        """Wait for pending settlements (at shutdown)."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)
