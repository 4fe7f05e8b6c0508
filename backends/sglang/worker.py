"""One SGLang worker as the gateway sees it: address, health, load and KV use."""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.sglang.config import HealthConfig


@dataclass(slots=True)
class Worker:
    """A worker's health (with up/down hysteresis), load and projected KV use.

    A new worker starts healthy, so a gateway serves at once; the first probe
    and the first connection error correct that within one check interval.

    Load combines what this replica knows now (its own in-flight requests)
    with what the worker reported for the other replicas at the last scrape
    (``/get_load``, with the health checks).
    """

    url: str
    health: HealthConfig
    healthy: bool = True
    in_flight: int = 0
    #: KV-cache capacity in tokens (``max_total_num_tokens``), once known.
    capacity_tokens: int | None = None
    #: KV tokens this replica has admitted to the worker and not yet released.
    projected_tokens: int = 0
    #: From the worker's ``/get_load``: requests running or queued, tokens in use.
    reported_requests: int = 0
    reported_tokens: int = 0
    #: Requests other replicas had on the worker at the last scrape (reported minus ours).
    others_requests: int = 0
    #: KV tokens the worker reported beyond our projection at the last scrape: other
    #: replicas' requests, and anything queued on the worker that we did not foresee.
    others_tokens: int = 0
    #: The worker's circuit breaker state: 0 closed, 1 half-open, 2 open (kept in
    #: step by the pool's breaker, which reports every change; read by the metrics).
    circuit_state: int = 0
    _ok_streak: int = field(default=0, repr=False)
    _fail_streak: int = field(default=0, repr=False)

    @property
    def load(self) -> int:
        """Requests on the worker: ours now, plus the other replicas' at the last scrape.

        Not the larger of ours and the report: the report is up to a health
        interval old, and would keep a worker looking busy after it drained.
        """
        return self.in_flight + self.others_requests

    @property
    def kv_used_tokens(self) -> int:
        """KV tokens in use or promised: our projection now, plus the rest of the last report.

        Not the larger of the two: the report is up to a health interval old, and
        a worker that was full at the last scrape would look full until the next
        one, long after our requests on it ended.
        """
        return self.projected_tokens + self.others_tokens

    def record_probe(self, ok: bool, *, initial: bool = False) -> None:
        """Fold one health-check result into the state.

        The ``initial`` probe (at start) decides at once, without hysteresis.
        """
        if initial:
            self.healthy = ok
            self._ok_streak, self._fail_streak = (1, 0) if ok else (0, 1)
            return
        if ok:
            self._ok_streak += 1
            self._fail_streak = 0
            if not self.healthy and self._ok_streak >= self.health.healthy_threshold:
                self.healthy = True
        else:
            self._fail_streak += 1
            self._ok_streak = 0
            if self.healthy and self._fail_streak >= self.health.unhealthy_threshold:
                self.healthy = False

    def mark_down(self) -> None:
        """Take the worker out at once (it refused a connection)."""
        self.healthy = False
        self._ok_streak = 0
        self._fail_streak = max(self._fail_streak, self.health.unhealthy_threshold)
