"""KV-capacity admission: keep each worker's projected KV use under a ceiling.

A request needs KV cache for its prompt plus the output it may produce
(:class:`KvNeed`). It is admitted to the first worker, in the picker's order,
whose projected use stays at or below ``headroom`` × capacity; a worker with
nothing in flight always admits (so an oversized request cannot wait forever),
unless its whole pool is smaller than the fewest tokens the request can need
(``KvNeed.least``): such a worker is never a candidate for it, and when no
usable worker can hold it the request gets 503 at once rather than waiting
(the pool refuses one that no worker at all can hold with 400 beforehand; see
:mod:`backends.sglang.capacity`).
The amount reserved on that worker is recorded in a :class:`Reservation` and
given back, exactly once, by :meth:`KvAdmission.release`.

Otherwise the request waits in a bounded per-pool queue, served by priority
(higher first) and, within a priority, by deficit round robin across tenants
weighted by tokens — one tenant's flood cannot starve another tenant. A waiter
that is not admitted before its deadline gets 429 with ``Retry-After``; a pool
with no healthy worker answers 503.

**The home worker.** A request with an affinity key has a home: the worker
that served the session's previous turns and holds its prefix in its radix
cache. Sending a turn elsewhere costs its whole prompt in prefill there and a
partial miss on the next turn back home. So when the home is at its ceiling
but another worker has room, the request may *wait for its home* up to
``home_wait_s`` before it goes elsewhere (``home_wait_s`` 0: it goes at once).
A request waiting for its home is not in the queue: it arrived when the queue
was empty and any worker could have taken it, so it is served before queued
requests (its wait is short and bounded), only by its home, and only while the
home stays first in the picker's order.

What a request's cached prefix does *not* change is the room it needs: a
running sequence holds its whole context in the KV pool, cached part included
(SGLang locks the matched radix nodes, which makes them unevictable, and
allocates slots for the rest; the emulator does the same). ``KvNeed.cached``
can discount the home worker's charge for deployments that prefer more
overcommit on the home worker to moving sessions; see the pool's
``home_prefix_discount``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from backends.sglang.worker import Worker
from tollway.errors import RateLimited, UpstreamUnavailable

Order = Callable[[], list[Worker]]

#: The 503 when no usable worker is left (or none whose whole pool can hold the request).
_NO_HOLDER = "no healthy worker in the pool can hold the request"


@dataclass(frozen=True, slots=True)
class KvNeed:
    """What one request needs of a worker's KV cache, in tokens.

    ``tokens`` is the prompt plus the output it may produce: what any worker is
    charged. ``home`` is the URL of the worker most likely to hold the
    request's prefix (None: no affinity). On the home, ``cached`` of those
    tokens are charged no more (0 unless the pool discounts them).
    """

    tokens: int
    home: str | None = None
    cached: int = 0
    #: The fewest tokens the request can need (its prompt read conservatively, plus
    #: the output asked for): a worker whose whole pool is smaller can never hold it.
    #: 0: not known, any worker may.
    least: int = 0

    def held_by(self, worker: Worker) -> bool:
        """Whether ``worker``'s whole KV pool can hold the request (unknown: yes)."""
        return worker.capacity_tokens is None or self.least <= worker.capacity_tokens

    def on(self, worker: Worker) -> int:
        """Tokens to reserve on ``worker``."""
        if self.cached > 0 and worker.url == self.home:
            return max(1, self.tokens - self.cached)
        return self.tokens


@dataclass(slots=True, eq=False)
class Reservation:
    """KV tokens reserved on one worker for one request."""

    worker: Worker
    tokens: int
    released: bool = False


@dataclass(slots=True, eq=False)
class Waiter:
    """A request waiting for KV room."""

    tenant: str
    priority: int
    need: KvNeed
    order: Order
    future: asyncio.Future[Reservation]
    enqueued_at: float = field(default_factory=time.monotonic)

    @property
    def tokens(self) -> int:
        """Its weight in the tenants' deficit round robin."""
        return max(1, self.need.tokens)


@dataclass(slots=True, eq=False)
class _HomeWait:
    """A request waiting a short while for its home worker (see the module docstring)."""

    home: Worker
    need: KvNeed
    order: Order
    #: Set to a reservation on the home, or to None when the home stopped being first.
    future: asyncio.Future[Reservation | None]


class _FairQueue:
    """Deficit round robin across tenants (weighted by tokens), for one priority."""

    def __init__(self, quantum: int) -> None:
        self.quantum = quantum
        self.tenants: OrderedDict[str, deque[Waiter]] = OrderedDict()
        self.deficit: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self.tenants.values())

    def push(self, waiter: Waiter) -> None:
        if waiter.tenant not in self.tenants:
            self.tenants[waiter.tenant] = deque()
            self.deficit[waiter.tenant] = 0
        self.tenants[waiter.tenant].append(waiter)

    def remove(self, waiter: Waiter) -> None:
        queue = self.tenants.get(waiter.tenant)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self.tenants[waiter.tenant]
                del self.deficit[waiter.tenant]

    def peek(self) -> Waiter | None:
        """The next waiter by DRR, crediting deficits as it goes (no removal)."""
        if not self.tenants:
            return None
        while True:
            tenant, queue = next(iter(self.tenants.items()))
            head = queue[0]
            if self.deficit[tenant] >= head.tokens:
                return head
            self.deficit[tenant] += self.quantum
            self.tenants.move_to_end(tenant)

    def pop(self, waiter: Waiter) -> None:
        """Remove the waiter ``peek`` returned, charging its tenant."""
        self.deficit[waiter.tenant] -= waiter.tokens
        self.remove(waiter)


class KvAdmission:
    """Per-pool KV admission with a bounded, tenant-fair, priority-aware queue."""

    def __init__(
        self,
        *,
        headroom: float,
        queue_size: int,
        max_wait_s: float,
        quantum_tokens: int,
        home_wait_s: float = 0.0,
    ) -> None:
        self.headroom = headroom
        self.queue_size = queue_size
        self.max_wait_s = max_wait_s
        self.quantum_tokens = quantum_tokens
        self.home_wait_s = home_wait_s
        self._queues: dict[int, _FairQueue] = {}
        self._home_waits: deque[_HomeWait] = deque()
        self.admitted = 0
        self.shed = 0
        #: Requests that waited for their home worker, and of those, how many got it.
        self.home_waited = 0
        self.home_won = 0
        #: Called with the seconds each queued request waited (admitted or shed).
        self.on_wait: Callable[[float], None] | None = None

    @property
    def queued(self) -> int:
        """Requests in the queue now (no worker had room for them)."""
        return sum(len(q) for q in self._queues.values())

    @property
    def depth(self) -> int:
        """Requests waiting now: queued, or waiting a moment for their home worker."""
        return self.queued + len(self._home_waits)

    def fits(self, worker: Worker, tokens: int) -> bool:
        """Whether ``worker`` can take ``tokens`` more within the ceiling."""
        if worker.capacity_tokens is None or worker.in_flight == 0:
            return True
        return worker.kv_used_tokens + tokens <= self.headroom * worker.capacity_tokens

    def _room(self, worker: Worker, need: KvNeed) -> bool:
        """Whether ``worker`` can hold ``need`` at all and has room for it now."""
        return need.held_by(worker) and self.fits(worker, need.on(worker))

    def _first_fit(self, candidates: list[Worker], need: KvNeed) -> Worker | None:
        for worker in candidates:
            if self._room(worker, need):
                return worker
        return None

    @staticmethod
    def _holders(order: Order, need: KvNeed) -> list[Worker]:
        """The usable workers, in order, whose whole pool can hold ``need``."""
        return [w for w in order() if need.held_by(w)]

    def _reserve(self, worker: Worker, need: KvNeed) -> Reservation:
        tokens = need.on(worker)
        worker.projected_tokens += tokens
        self.admitted += 1
        return Reservation(worker, tokens)

    async def acquire(
        self, order: Order, need: KvNeed, *, tenant: str, priority: int
    ) -> Reservation:
        """A worker with KV room for ``need``, reserved; waits for it if none has room now."""
        candidates = self._holders(order, need)
        if not candidates:
            raise UpstreamUnavailable(_NO_HOLDER, code="upstream_unavailable")
        started = time.monotonic()
        if self.queued == 0:
            worker = self._first_fit(candidates, need)
            if worker is not None:
                home = candidates[0]
                if worker is home or not self._may_wait_for(home, need):
                    return self._reserve(worker, need)
                reservation = await self._wait_for_home(home, need, order)
                if reservation is None:
                    reservation = self._admit_now(order, need)
                if reservation is not None:
                    self._observe(started)
                    return reservation
        return await self._queue(order, need, tenant, priority, started)

    def _may_wait_for(self, home: Worker, need: KvNeed) -> bool:
        return self.home_wait_s > 0 and need.home == home.url and self.depth < self.queue_size

    def _admit_now(self, order: Order, need: KvNeed) -> Reservation | None:
        """The first worker with room now, reserved, unless the queue is ahead."""
        if self.queued:
            return None
        candidates = self._holders(order, need)
        if not candidates:
            raise UpstreamUnavailable(_NO_HOLDER, code="upstream_unavailable")
        worker = self._first_fit(candidates, need)
        return None if worker is None else self._reserve(worker, need)

    async def _wait_for_home(self, home: Worker, need: KvNeed, order: Order) -> Reservation | None:
        """Wait up to ``home_wait_s`` for room on ``home``; None when it did not come."""
        future: asyncio.Future[Reservation | None] = asyncio.get_running_loop().create_future()
        wait = _HomeWait(home, need, order, future)
        self._home_waits.append(wait)
        self.home_waited += 1
        reservation: Reservation | None = None
        try:
            reservation = await asyncio.wait_for(
                asyncio.shield(future), min(self.home_wait_s, self.max_wait_s)
            )
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            self._drop_home_wait(wait)
            late = future.result() if not future.cancelled() else None
            if late is not None:
                self.release(late)
            raise
        self._drop_home_wait(wait)
        if reservation is None and not future.cancelled():
            reservation = future.result()  # admitted at the last moment
        if reservation is not None:
            self.home_won += 1
        return reservation

    def _drop_home_wait(self, wait: _HomeWait) -> None:
        if wait in self._home_waits:
            self._home_waits.remove(wait)
        if not wait.future.done():
            wait.future.set_result(None)

    async def _queue(
        self, order: Order, need: KvNeed, tenant: str, priority: int, started: float
    ) -> Reservation:
        if self.depth >= self.queue_size:
            self.shed += 1
            raise RateLimited(
                "The pool is at its KV-cache ceiling and its queue is full; retry shortly.",
                retry_after=1.0,
                code="pool_saturated",
            )
        future: asyncio.Future[Reservation] = asyncio.get_running_loop().create_future()
        waiter = Waiter(tenant, priority, need, order, future, enqueued_at=started)
        self._queues.setdefault(priority, _FairQueue(self.quantum_tokens)).push(waiter)
        self._dispatch()
        left = max(0.0, self.max_wait_s - (time.monotonic() - started))
        try:
            reservation = await asyncio.wait_for(asyncio.shield(future), left)
            self._observe(started)
            return reservation
        except TimeoutError:
            self._observe(started)
            if future.done() and not future.cancelled() and future.exception() is None:
                return future.result()  # admitted at the last moment
            self._queues[priority].remove(waiter)
            self.shed += 1
            raise RateLimited(
                "The pool stayed at its KV-cache ceiling for the whole wait; retry shortly.",
                retry_after=max(1.0, self.max_wait_s / 4),
                code="pool_saturated",
            ) from None
        except asyncio.CancelledError:
            self._queues[priority].remove(waiter)
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result())
            raise

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation (once; later calls do nothing) and admit whoever now fits."""
        if reservation.released:
            return
        reservation.released = True
        worker = reservation.worker
        worker.projected_tokens = max(0, worker.projected_tokens - reservation.tokens)
        self._dispatch()

    def _observe(self, started: float) -> None:
        if self.on_wait is not None:
            self.on_wait(time.monotonic() - started)

    def wake(self) -> None:
        """Re-check the waiters (worker health, load or capacity changed)."""
        self._dispatch()

    def _dispatch(self) -> None:
        self._serve_home_waits()
        self._serve_queue()

    def _serve_home_waits(self) -> None:
        """Give each home waiter its home once it has room (oldest first)."""
        for wait in list(self._home_waits):
            if wait.future.done():
                self._home_waits.remove(wait)
                continue
            candidates = wait.order()
            if not candidates or candidates[0] is not wait.home:
                # Its home went down or is over the load bound: stop waiting for it.
                self._home_waits.remove(wait)
                wait.future.set_result(None)
                continue
            if self._room(wait.home, wait.need):
                self._home_waits.remove(wait)
                wait.future.set_result(self._reserve(wait.home, wait.need))

    def _serve_queue(self) -> None:
        for priority in sorted(self._queues, reverse=True):
            queue = self._queues[priority]
            while True:
                waiter = queue.peek()
                if waiter is None:
                    break
                if waiter.future.done():
                    queue.pop(waiter)
                    continue
                candidates = self._holders(waiter.order, waiter.need)
                if not candidates:
                    queue.pop(waiter)
                    waiter.future.set_exception(UpstreamUnavailable(_NO_HOLDER))
                    continue
                worker = self._first_fit(candidates, waiter.need)
                if worker is None:
                    return  # strict order: nobody behind it jumps the queue
                queue.pop(waiter)
                waiter.future.set_result(self._reserve(worker, waiter.need))
