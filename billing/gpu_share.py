"""GPU-second share: how much of a worker's time each in-flight request used.

While ``n`` requests are in flight on a worker, each accrues ``dt / n`` GPU-seconds.
The accountant keeps, per worker, the running integral ``V(t) = ∫ dt / n(t)`` (a
"virtual clock" that advances only while the worker is busy), updated on every start
and finish. A request's share is ``V(finish) - V(start)``: exact piecewise accrual in
O(1) per event, with no timers. Shares of the requests on a worker add up to the
worker's busy time.

Multiplied by the pool's GPU-hour cost (:func:`internal_cost_micros`) the share is
the request's internal cost, so margins per model, pool and tenant can be reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from billing.money import usd_to_micros


@dataclass(frozen=True, slots=True)
class ShareHandle:
    """One in-flight request on a worker, returned by :meth:`GpuShareAccountant.start`."""

    worker: str
    start_virtual: float
    token: int


@dataclass(slots=True)
class _WorkerClock:
    in_flight: int = 0
    virtual: float = 0.0
    last: float = 0.0
    open_tokens: set[int] = field(default_factory=set)


class GpuShareAccountant:
    """Tracks in-flight requests per worker and accrues their GPU-second shares.

    ``clock`` returns monotonic seconds (inject a fake clock in tests). Not
    thread-safe: use it from one event loop.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._workers: dict[str, _WorkerClock] = {}
        self._next_token = 0

    def _advance(self, state: _WorkerClock, now: float) -> None:
        if state.in_flight > 0 and now > state.last:
            state.virtual += (now - state.last) / state.in_flight
        state.last = max(state.last, now)

    def start(self, worker: str) -> ShareHandle:
        """A request starts on ``worker``; keep the handle to :meth:`finish` it."""
        now = self._clock()
        state = self._workers.get(worker)
        if state is None:
            # An idle worker's clock is dropped, so virtual time never grows unbounded.
            state = self._workers[worker] = _WorkerClock(last=now)
        self._advance(state, now)
        state.in_flight += 1
        self._next_token += 1
        state.open_tokens.add(self._next_token)
        return ShareHandle(worker, state.virtual, self._next_token)

    def finish(self, handle: ShareHandle) -> float:
        """The request ends: returns its GPU-second share. Finishing twice returns 0."""
        state = self._workers.get(handle.worker)
        if state is None or handle.token not in state.open_tokens:
            return 0.0
        self._advance(state, self._clock())
        state.open_tokens.discard(handle.token)
        state.in_flight -= 1
        share = state.virtual - handle.start_virtual
        if state.in_flight == 0:
            del self._workers[handle.worker]
        return max(0.0, share)

    def in_flight(self, worker: str) -> int:
        """Requests in flight on ``worker`` now."""
        state = self._workers.get(worker)
        return state.in_flight if state is not None else 0


def internal_cost_micros(gpu_seconds: float, gpu_hour_usd: Decimal | str) -> int:
    """Internal cost of a GPU-second share at a pool's GPU-hour cost, in micro-USD."""
    return usd_to_micros(Decimal(repr(gpu_seconds)) * Decimal(gpu_hour_usd) / 3600)
