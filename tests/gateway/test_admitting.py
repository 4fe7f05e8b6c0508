"""The admitter's speculative admissions: a ticket whose request ended early is settled."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.admitting import EAGER_BELOW, Admitter
from gateway.auth import Principal
from gateway.limits import AdmissionRequest, MemoryAdmission, Ticket
from gateway.limits.admission import Admission
from gateway.limits.floors import SpendFloor
from gateway.outcome import RequestRecord
from gateway.speculation import SpeculationGate
from gateway.tenancy.schemas import Limits


class SlowAdmission:
    """Admits in memory once ``release`` is set; records settlements."""

    def __init__(self) -> None:
        self.engine = MemoryAdmission()
        self.release = asyncio.Event()
        self.settled: list[tuple[str, int, int]] = []

    async def admit(self, request: AdmissionRequest) -> Ticket:
        await self.release.wait()
        ticket = await self.engine.admit(request)
        ticket.engine = "redis"  # as if Redis had answered: the gate learns from it
        return ticket

    async def settle(self, ticket: Ticket, actual_tokens: int, actual_cost: int) -> None:
        self.settled.append((ticket.request_id, actual_tokens, actual_cost))
        await self.engine.settle(ticket, actual_tokens, actual_cost)

    async def raise_spend_floors(self, floors: Sequence[SpendFloor], now_ms: int) -> int:
        return await self.engine.raise_spend_floors(floors, now_ms)


def principal() -> Principal:
    return Principal(
        tenant_id="t", key_id="k", key_prefix="tw-k", key_limits=Limits(rpm=100, max_concurrent=5)
    )


def test_the_stand_in_is_an_admission() -> None:
    stand_in: Admission = SlowAdmission()  # mypy checks the protocol (the class is typed)
    assert callable(stand_in.raise_spend_floors)


async def test_an_abandoned_speculation_is_settled_when_its_answer_arrives() -> None:
    admission = SlowAdmission()
    admitter = Admitter(admission, None, speculation=SpeculationGate())
    who = principal()
    admission.release.set()
    first = RequestRecord("r1", "/v1/chat/completions")
    assert await admitter.admit(first, who, 10, 10) is not None  # teaches the gate
    admission.release.clear()
    record = RequestRecord("r2", "/v1/chat/completions")
    pending = admitter.speculate(record, who, 10, 10)
    assert pending is not None and record.speculative
    admitter.abandon(pending, record)  # the client went away before the answer
    assert admission.settled == []
    admission.release.set()
    await pending
    await admitter.drain()
    assert admission.settled == [("r2", 0, 0)]


async def test_an_abandoned_refusal_settles_nothing() -> None:
    admission = SlowAdmission()
    admitter = Admitter(admission, None, speculation=SpeculationGate())
    who = principal()
    admission.release.set()
    assert await admitter.admit(RequestRecord("r1", "/v1/x"), who, 10, 10) is not None
    limited = Principal(
        tenant_id="t", key_id="k", key_prefix="tw-k", key_limits=Limits(rpm=100, tpm=30)
    )
    # The hint came from a key without a tokens limit; this principal has one of 30,
    # and asks for 40: Redis (here: memory) refuses.
    record = RequestRecord("r2", "/v1/x")
    pending = admitter.speculate(record, limited, 20, 20)
    assert pending is not None
    admitter.abandon(pending, record)
    await asyncio.gather(pending, return_exceptions=True)
    await admitter.drain()
    assert admission.settled == []
    assert admitter.speculation is not None and admitter.speculation.lost == 1


class CountingAdmission(SlowAdmission):
    """SlowAdmission that notes when each admission's first step ran."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[str] = []

    async def admit(self, request: AdmissionRequest) -> Ticket:
        self.started.append(request.request_id)
        return await super().admit(request)


async def test_a_speculation_starts_at_once_when_few_are_in_flight_else_a_turn_later() -> None:
    admission = CountingAdmission()
    admitter = Admitter(admission, None, speculation=SpeculationGate())
    who = Principal(tenant_id="t", key_id="k", key_prefix="tw-k", key_limits=Limits(rpm=10_000))
    admission.release.set()
    assert await admitter.admit(RequestRecord("r0", "/v1/chat/completions"), who, 1, 1)
    admission.release.clear()
    admission.started.clear()
    pendings = []
    for i in range(EAGER_BELOW + 2):
        pending = admitter.speculate(RequestRecord(f"s{i}", "/v1/chat/completions"), who, 1, 1)
        assert pending is not None
        pendings.append(pending)
    # Eager: the first ones reached the engine before speculate() returned; the rest
    # (too many in flight) run as tasks, on the loop's next turn.
    assert admission.started == [f"s{i}" for i in range(EAGER_BELOW)]
    assert admitter.in_flight == EAGER_BELOW + 2
    await asyncio.sleep(0)
    assert len(admission.started) == EAGER_BELOW + 2
    admission.release.set()
    await asyncio.gather(*pendings)
    assert admitter.in_flight == 0
