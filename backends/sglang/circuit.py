"""A circuit breaker per worker: stop sending to a worker that keeps failing.

::

    closed ──(N consecutive failures, or error rate ≥ R over the window)──▶ open
    open ──(open_duration_s elapsed)──▶ half_open
    half_open ──(close_after_successes successes)──▶ closed
    half_open ──(any failure)──▶ open

Closed admits everything. Open admits nothing until ``open_duration_s`` has
passed since it opened. Half-open admits at most ``half_open_max_probes``
requests at a time as probes; their results (and health checks') decide.

Health checks feed the breaker through :meth:`CircuitBreaker.record_probe`: a
failed check counts as a failure when closed, keeps an open breaker open for
another ``open_duration_s`` (no trial request is sent to a worker that does not
answer its health check), and reopens a half-open one; a passed check counts as
a success only in half-open (a worker can pass ``/health`` while failing its
requests, so a passed check never excuses request failures).

State numbers match the ``tollway_circuit_state`` gauge the dashboards and
alerts read: 0 closed, 1 half-open, 2 open.

Each breaker belongs to one replica (no shared state): every replica learns
about a bad worker from its own traffic and its own health checks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field


class CircuitState(IntEnum):
    """A breaker's state; the value is what ``tollway_circuit_state`` exports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


#: Called with ``(old, new)`` after every state change.
StateHook = Callable[[CircuitState, CircuitState], None]

#: Buckets the rolling window is split into (its time resolution).
_BUCKETS = 10


class CircuitConfig(BaseModel):
    """When a worker's breaker opens and how it recovers (a pool's ``circuit:`` section).

    Example::

        pools:
          h100-small:
            circuit:
              consecutive_failures: 5
              error_rate: 0.5
              window_s: 30
              min_requests: 20
              open_duration_s: 15
              half_open_max_probes: 1
              close_after_successes: 2
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="false: every breaker stays closed.")
    consecutive_failures: int = Field(
        default=5, ge=1, le=10_000, description="Failures in a row that open the breaker."
    )
    error_rate: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of failed requests over the window that opens the breaker.",
    )
    window_s: float = Field(
        default=30.0, gt=0, le=3600, description="Length of the rolling error-rate window."
    )
    min_requests: int = Field(
        default=20,
        ge=1,
        le=1_000_000,
        description="Requests the window must hold before its error rate can open the breaker.",
    )
    open_duration_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="How long an open breaker refuses everything before it half-opens.",
    )
    half_open_max_probes: int = Field(
        default=1, ge=1, le=1000, description="Trial requests a half-open breaker lets run at once."
    )
    close_after_successes: int = Field(
        default=2, ge=1, le=1000, description="Successes in half-open that close the breaker."
    )


class CircuitBreaker:
    """One worker's breaker. Not thread-safe; meant for one event loop.

    Call :meth:`available` when ranking workers (it changes nothing),
    :meth:`allow` once the worker is chosen (in half-open it takes a probe slot),
    then exactly one of :meth:`record_success`, :meth:`record_failure` or
    :meth:`release` when the request ends. ``clock`` returns seconds
    (monotonic); ``on_change`` is called after each transition.
    """

    def __init__(
        self,
        config: CircuitConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: StateHook | None = None,
    ) -> None:
        self.config = config or CircuitConfig()
        self._clock = clock
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self._opened_at = 0.0
        self._streak = 0
        self._successes = 0
        #: Start times of the probes running in half-open.
        self._probes: deque[float] = deque()
        self._bucket_s = self.config.window_s / _BUCKETS
        #: Rolling window: ``[bucket index, successes, failures]``, oldest first.
        self._window: deque[list[int]] = deque()
        #: Times the breaker opened since it was made (for logs and tests).
        self.opened_count = 0

    # -- reading -----------------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The state now (an open breaker whose time is up reads as half-open)."""
        self._refresh()
        return self._state

    @property
    def probes_in_flight(self) -> int:
        """Probes admitted in half-open that have not reported yet."""
        self._refresh()
        return len(self._probes)

    def retry_after_s(self) -> float:
        """Seconds until an open breaker half-opens (0 when it is not open)."""
        self._refresh()
        if self._state is not CircuitState.OPEN:
            return 0.0
        return self.config.open_duration_s - (self._clock() - self._opened_at)

    def window_counts(self) -> tuple[int, int]:
        """``(successes, failures)`` in the rolling window (closed state only)."""
        self._trim(self._clock())
        return sum(b[1] for b in self._window), sum(b[2] for b in self._window)

    # -- admitting ---------------------------------------------------------------------------

    def available(self) -> bool:
        """Whether :meth:`allow` would admit a request now; takes nothing."""
        if not self.config.enabled:
            return True
        self._refresh()
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN:
            return False
        return len(self._probes) < self.config.half_open_max_probes

    def allow(self) -> bool:
        """Admit one request? In half-open this takes one of the probe slots."""
        if not self.available():
            return False
        if self.config.enabled and self._state is CircuitState.HALF_OPEN:
            self._probes.append(self._clock())
        return True

    # -- recording ---------------------------------------------------------------------------

    def record_success(self) -> None:
        """A request admitted by :meth:`allow` succeeded."""
        if not self.config.enabled:
            return
        self._refresh()
        if self._state is CircuitState.CLOSED:
            self._streak = 0
            self._count(ok=True)
        elif self._state is CircuitState.HALF_OPEN:
            self._end_probe()
            self._half_open_success()
        # open: a late answer from before it opened changes nothing

    def record_failure(self) -> None:
        """A request admitted by :meth:`allow` failed because of the worker."""
        if not self.config.enabled:
            return
        self._refresh()
        if self._state is CircuitState.CLOSED:
            self._streak += 1
            self._count(ok=False)
            if self._should_open():
                self._open()
        elif self._state is CircuitState.HALF_OPEN:
            self._end_probe()
            self._open()

    def release(self) -> None:
        """A request admitted by :meth:`allow` ended without a verdict on the worker
        (the client went away, or the gateway refused it): free its probe slot."""
        if not self.config.enabled:
            return
        self._refresh()
        if self._state is CircuitState.HALF_OPEN:
            self._end_probe()

    def record_probe(self, ok: bool) -> None:
        """Fold one health-check result in (see the module docstring)."""
        if not self.config.enabled:
            return
        self._refresh()
        if ok:
            if self._state is CircuitState.HALF_OPEN:
                self._half_open_success()
            return
        if self._state is CircuitState.CLOSED:
            self._streak += 1
            self._count(ok=False)
            if self._should_open():
                self._open()
        elif self._state is CircuitState.OPEN:
            self._opened_at = self._clock()
        else:
            self._open()

    def reset(self) -> None:
        """Close the breaker and forget its history (an operator's override)."""
        self._streak = self._successes = 0
        self._probes.clear()
        self._window.clear()
        self._move(CircuitState.CLOSED)

    # -- internals ---------------------------------------------------------------------------

    def _refresh(self) -> None:
        now = self._clock()
        if self._state is CircuitState.OPEN:
            if now - self._opened_at >= self.config.open_duration_s:
                self._successes = 0
                self._probes.clear()
                self._move(CircuitState.HALF_OPEN)
        elif self._state is CircuitState.HALF_OPEN:
            # A probe that never reported (its task died) frees its slot eventually.
            expiry = now - self.config.open_duration_s
            while self._probes and self._probes[0] <= expiry:
                self._probes.popleft()

    def _end_probe(self) -> None:
        if self._probes:
            self._probes.popleft()

    def _half_open_success(self) -> None:
        self._successes += 1
        if self._successes >= self.config.close_after_successes:
            self._streak = self._successes = 0
            self._probes.clear()
            self._window.clear()
            self._move(CircuitState.CLOSED)

    def _should_open(self) -> bool:
        cfg = self.config
        if self._streak >= cfg.consecutive_failures:
            return True
        successes, failures = self.window_counts()
        total = successes + failures
        return total >= cfg.min_requests and failures >= cfg.error_rate * total

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._streak = self._successes = 0
        self._probes.clear()
        self._window.clear()
        self.opened_count += 1
        self._move(CircuitState.OPEN)

    def _move(self, new: CircuitState) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_change is not None:
            self._on_change(old, new)

    def _trim(self, now: float) -> int:
        index = int(now // self._bucket_s)
        oldest = index - _BUCKETS + 1
        while self._window and self._window[0][0] < oldest:
            self._window.popleft()
        return index

    def _count(self, *, ok: bool) -> None:
        index = self._trim(self._clock())
        if not self._window or self._window[-1][0] != index:
            self._window.append([index, 0, 0])
        self._window[-1][1 if ok else 2] += 1
