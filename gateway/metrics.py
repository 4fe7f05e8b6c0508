"""Prometheus metrics: one registry per app, request metrics, and pool gauges.

Request metrics are updated once per finished request (``observe``). Pool,
worker and buffer figures are read from the live objects when ``/metrics`` is
scraped, so the request path never touches them. With several worker
processes (``PROMETHEUS_MULTIPROC_DIR`` set, as ``tollway serve --workers N``
does), counters and histograms are aggregated across processes; the scraped
gauges then show the process that answered. The names are the contract of the
dashboards and alerts under ``infra/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backends.base import Backend
from backends.sglang.pool import SGLangPool
from gateway.metering import Metering
from gateway.outcome import RequestRecord
from gateway.speculation import SpeculationGate

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CLOSED, HALF_OPEN, OPEN = 0, 1, 2
#: Error codes that mean Redis failed (the store behind limits, idempotency, summaries).
_REDIS_CODES = frozenset(
    {"rate_limit_store_unavailable", "idempotency_store_unavailable", "summary_store_unavailable"}
)


@dataclass(slots=True)
class _Series:
    """A request's labelled metric children (see ``Metrics._series``); the optional
    ones are made on first use, so a series appears only once it has a value."""

    requests: Counter
    duration: Histogram
    ttft: Histogram | None = None
    tokens: tuple[Counter, Counter, Counter] | None = None
    cost: Counter | None = None


class StateCollector(Collector):
    """Queue depth, admissions, workers, circuits and the usage buffer, read at scrape time."""

    def __init__(
        self,
        backends: Callable[[], Iterable[Backend]],
        metering: Metering | None,
        speculation: SpeculationGate | None = None,
    ) -> None:
        self._backends = backends
        self._metering = metering
        self._speculation = speculation

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "tollway_pool_queue_depth", "Requests waiting for KV room.", labels=["pool"]
        )
        admission = CounterMetricFamily(
            "tollway_admission", "KV admission decisions.", labels=["pool", "outcome"]
        )
        home = CounterMetricFamily(
            "tollway_admission_home_waits",
            "Requests that waited for KV room on their session's home worker, by result "
            "(won: admitted there; not_won: the wait ran out, the home left the order, "
            "or the request was cancelled).",
            labels=["pool", "result"],
        )
        in_flight = GaugeMetricFamily(
            "tollway_worker_in_flight",
            "Requests in flight from this replica.",
            labels=["pool", "worker"],
        )
        kv = GaugeMetricFamily(
            "tollway_worker_kv_projected_ratio",
            "Projected KV use over capacity.",
            labels=["pool", "worker"],
        )
        circuit = GaugeMetricFamily(
            "tollway_circuit_state",
            "0 closed, 1 half-open, 2 open (worker out).",
            labels=["pool", "worker"],
        )
        for backend in self._backends():
            if not isinstance(backend, SGLangPool):
                continue
            depth.add_metric([backend.name], backend.admission.depth)
            admission.add_metric([backend.name, "admitted"], backend.admission.admitted)
            admission.add_metric([backend.name, "shed"], backend.admission.shed)
            admission.add_metric([backend.name, "too_large"], backend.too_large)
            won = backend.admission.home_won
            home.add_metric([backend.name, "won"], won)
            home.add_metric([backend.name, "not_won"], backend.admission.home_waited - won)
            for w in backend.workers:
                labels = [backend.name, w.url]
                in_flight.add_metric(labels, w.in_flight)
                ratio = w.kv_used_tokens / w.capacity_tokens if w.capacity_tokens else 0.0
                kv.add_metric(labels, ratio)
                circuit.add_metric(labels, w.circuit_state if w.healthy else OPEN)
        yield from (depth, admission, home, in_flight, kv, circuit)
        if self._speculation is not None:
            yield CounterMetricFamily(
                "tollway_admission_speculated",
                "Requests dispatched to a pool while their rate-limit admission was in flight.",
                value=self._speculation.speculated,
            )
            yield CounterMetricFamily(
                "tollway_admission_speculation_lost",
                "Speculated requests that Redis then refused (their upstream work was wasted).",
                value=self._speculation.lost,
            )
        if self._metering is not None:
            yield GaugeMetricFamily(
                "tollway_usage_buffer_depth",
                "Usage records buffered, not yet in the ledger.",
                value=self._metering.buffer_depth,
            )
            yield GaugeMetricFamily(
                "tollway_usage_spool_bytes",
                "Bytes in the local usage spool.",
                value=self._metering.spool_bytes,
            )
            yield GaugeMetricFamily(
                "tollway_ledger_lag_seconds",
                "Age of the oldest usage record not yet in the ledger (spool or stream), or "
                "seconds since the inline ledger writer's last round, whichever is larger.",
                value=self._metering.ledger_lag_s,
            )


class Metrics:
    """The gateway's metrics, registered on a registry of its own."""

    def __init__(
        self,
        backends: Callable[[], Iterable[Backend]],
        metering: Metering | None = None,
        *,
        tenant_labels: bool = False,
        speculation: SpeculationGate | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tenant_requests: Counter | None = None
        self.tenant_cost: Counter | None = None
        if tenant_labels:
            self.tenant_requests = Counter(
                "tollway_tenant_requests",
                "Requests per tenant, by HTTP status.",
                ["tenant", "status"],
                registry=r,
            )
            self.tenant_cost = Counter(
                "tollway_tenant_cost_usd", "What each tenant was charged.", ["tenant"], registry=r
            )
        self._cache: dict[tuple[str, str, str, int], _Series] = {}
        self.requests = Counter(
            "tollway_requests",
            "Inference requests finished, by HTTP status.",
            ["route", "model", "agent_type", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "tollway_request_duration_seconds",
            "Request latency, arrival to last byte.",
            ["route", "model", "agent_type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tollway_time_to_first_token_seconds",
            "Arrival to the first upstream byte.",
            ["model", "agent_type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tollway_tokens",
            "Tokens by kind (prompt, cached, completion).",
            ["model", "agent_type", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "tollway_cost_usd", "What tenants were charged.", ["model", "agent_type"], registry=r
        )
        self.compression = Counter(
            "tollway_compression_tokens_saved",
            "Prompt tokens removed by compression.",
            ["agent_type", "policy"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "tollway_pool_queue_wait_seconds",
            "Time requests waited for KV room.",
            ["pool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_errors = Counter("tollway_redis_errors", "Redis errors.", registry=r)
        self.database_errors = Counter("tollway_database_errors", "Database errors.", registry=r)
        self.budget_resyncs = Counter(
            "tollway_budget_resyncs",
            "Budget counters restored from the ledger (synced) or rounds that failed.",
            ["outcome"],
            registry=r,
        )
        self._state = StateCollector(backends, metering, speculation)
        r.register(self._state)
        for backend in backends():
            if isinstance(backend, SGLangPool):
                backend.admission.on_wait = self.queue_wait.labels(backend.name).observe

    def count_error(self, code: str | None) -> None:
        """Count a Redis or database failure a client saw (by the error's code)."""
        if code == "database_error":
            self.database_errors.inc()
        elif code in _REDIS_CODES:
            self.redis_errors.inc()

    def _series(self, route: str, model: str, agent: str, status: int) -> _Series:
        """The labelled children for one route, model, agent type and status (cached:
        ``labels()`` takes a lock and builds a key on every call)."""
        key = (route, model, agent, status)
        series = self._cache.get(key)
        if series is None:
            if len(self._cache) > 10_000:  # label values come from config; a backstop
                self._cache.clear()
            series = _Series(
                self.requests.labels(route, model, agent, str(status)),
                self.duration.labels(route, model, agent),
            )
            self._cache[key] = series
        return series

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request."""
        if record.error_code is not None:
            self.count_error(record.error_code)
        route = (record.route or "none").split("/", 1)[0]
        model = record.model or "none"
        agent = record.agent_type or "none"
        series = self._series(route, model, agent, record.http_status)
        series.requests.inc()
        series.duration.observe(record.latency_s)
        ttft = record.ttft_s
        if ttft is not None:
            if series.ttft is None:
                series.ttft = self.ttft.labels(model, agent)
            series.ttft.observe(ttft)
        prompt, cached, completion = record.tokens()
        if prompt or completion:
            if series.tokens is None:
                series.tokens = (
                    self.tokens.labels(model, agent, "prompt"),
                    self.tokens.labels(model, agent, "cached"),
                    self.tokens.labels(model, agent, "completion"),
                )
            series.tokens[0].inc(prompt)
            series.tokens[1].inc(cached)
            series.tokens[2].inc(completion)
        if record.cost_micros:
            if series.cost is None:
                series.cost = self.cost.labels(model, agent)
            series.cost.inc(record.cost_micros / 1_000_000)
        if self.tenant_requests is not None and record.tenant_id:
            self.tenant_requests.labels(record.tenant_id, str(record.http_status)).inc()
            if self.tenant_cost is not None and record.cost_micros:
                self.tenant_cost.labels(record.tenant_id).inc(record.cost_micros / 1_000_000)
        before, after = record.tokens_before_compression, record.tokens_after_compression
        if before is not None and after is not None and before > after:
            self.compression.labels(agent, record.compression_policy or "none").inc(before - after)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        merged.register(self._state)
        return generate_latest(merged)
