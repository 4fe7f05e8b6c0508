"""KV-capacity admission: keep each worker's projected KV use under a ceiling.

A request needs ``tokens`` of KV cache (its prompt plus the output it may
produce). It is admitted to the first worker, in the picker's order, whose
projected use stays at or below ``headroom`` × capacity; a worker with nothing
in flight always admits (so an oversized request cannot wait forever).
Otherwise it waits in a bounded per-pool queue, served by priority (higher
first) and, within a priority, by deficit round robin across tenants weighted
by tokens — one tenant's flood cannot starve another tenant. A waiter that is
not admitted before its deadline gets 429 with ``Retry-After``; a pool with no
healthy worker answers 503.
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


@dataclass(slots=True)
class Waiter:
    """A request waiting for KV room."""

    tenant: str
    priority: int
    tokens: int
    order: Order
    future: asyncio.Future[Worker]
    enqueued_at: float = field(default_factory=time.monotonic)


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
    ) -> None:
        self.headroom = headroom
        self.queue_size = queue_size
        self.max_wait_s = max_wait_s
        self.quantum_tokens = quantum_tokens
        self._queues: dict[int, _FairQueue] = {}
        self.admitted = 0
        self.shed = 0
        #: Called with the seconds each queued request waited (admitted or shed).
        self.on_wait: Callable[[float], None] | None = None

    @property
    def depth(self) -> int:
        """Requests waiting now."""
        return sum(len(q) for q in self._queues.values())

    def fits(self, worker: Worker, tokens: int) -> bool:
        """Whether ``worker`` can take ``tokens`` more within the ceiling."""
        if worker.capacity_tokens is None or worker.in_flight == 0:
            return True
        return worker.kv_used_tokens + tokens <= self.headroom * worker.capacity_tokens

    def _first_fit(self, candidates: list[Worker], tokens: int) -> Worker | None:
        for worker in candidates:
            if self.fits(worker, tokens):
                return worker
        return None

    def _reserve(self, worker: Worker, tokens: int) -> Worker:
        worker.projected_tokens += tokens
        self.admitted += 1
        return worker

    async def acquire(self, order: Order, *, tokens: int, tenant: str, priority: int) -> Worker:
        """A worker with KV room for ``tokens``, reserved; waits in the queue if none."""
        candidates = order()
        if not candidates:
            raise UpstreamUnavailable("no healthy worker in the pool", code="upstream_unavailable")
        if self.depth == 0:
            worker = self._first_fit(candidates, tokens)
            if worker is not None:
                return self._reserve(worker, tokens)
        if self.depth >= self.queue_size:
            self.shed += 1
            raise RateLimited(
                "The pool is at its KV-cache ceiling and its queue is full; retry shortly.",
                retry_after=1.0,
                code="pool_saturated",
            )
        future: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
        waiter = Waiter(tenant, priority, max(1, tokens), order, future)
        self._queues.setdefault(priority, _FairQueue(self.quantum_tokens)).push(waiter)
        self._dispatch()
        try:
            worker = await asyncio.wait_for(asyncio.shield(future), self.max_wait_s)
            self._waited(waiter)
            return worker
        except TimeoutError:
            self._waited(waiter)
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
                self.release(future.result(), tokens)
            raise

    def release(self, worker: Worker, tokens: int) -> None:
        """Give back a reservation and admit whoever now fits."""
        worker.projected_tokens = max(0, worker.projected_tokens - tokens)
        self._dispatch()

    def _waited(self, waiter: Waiter) -> None:
        if self.on_wait is not None:
            self.on_wait(time.monotonic() - waiter.enqueued_at)

    def wake(self) -> None:
        """Re-check the queue (worker health, load or capacity changed)."""
        self._dispatch()

    def _dispatch(self) -> None:
        for priority in sorted(self._queues, reverse=True):
            queue = self._queues[priority]
            while True:
                waiter = queue.peek()
                if waiter is None:
                    break
                if waiter.future.done():
                    queue.pop(waiter)
                    continue
                candidates = waiter.order()
                if not candidates:
                    queue.pop(waiter)
                    waiter.future.set_exception(
                        UpstreamUnavailable("no healthy worker in the pool")
                    )
                    continue
                worker = self._first_fit(candidates, waiter.tokens)
                if worker is None:
                    return  # strict order: nobody behind it jumps the queue
                queue.pop(waiter)
                waiter.future.set_result(self._reserve(worker, waiter.tokens))
