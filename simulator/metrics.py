"""SGLang's Prometheus metrics, on a registry owned by one emulator app.

Names, help texts, label names and histogram buckets follow SGLang's
``SchedulerMetricsCollector`` (gauges, labels ``model_name``, ``engine_type``,
``tp_rank``, ``pp_rank``) and ``TokenizerMetricsCollector`` (counters and latency
histograms, label ``model_name``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
_ITL_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040,
    0.060, 0.080, 0.100, 0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000,
)  # fmt: skip
_E2E_BUCKETS = (
    0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400, 600,
    1200, 1800, 2400,
)  # fmt: skip
_QUEUE_BUCKETS = (0.0, 0.1, 0.2, 0.5, 1, 2, 3, 4, 5, 10, 15, 20, 30, 40, 50, 60, 100, 200, 300)

_SCHED_LABELS = ("model_name", "engine_type", "tp_rank", "pp_rank")
_TOKENIZER_LABELS = ("model_name",)


class EmulatorMetrics:
    """The metric families of one worker and helpers that feed them."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._sched = dict(model_name=model_name, engine_type="unified", tp_rank="0", pp_rank="0")
        self._tok = {"model_name": model_name}

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, _SCHED_LABELS, registry=self.registry)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, _TOKENIZER_LABELS, registry=self.registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, _TOKENIZER_LABELS, registry=self.registry, buckets=buckets)

        self.num_running_reqs = gauge("sglang:num_running_reqs", "The number of running requests.")
        self.num_used_tokens = gauge("sglang:num_used_tokens", "The number of used tokens.")
        self.token_usage = gauge("sglang:token_usage", "The token usage.")
        self.gen_throughput = gauge("sglang:gen_throughput", "The generation throughput (token/s).")
        self.num_queue_reqs = gauge(
            "sglang:num_queue_reqs", "The number of requests in the waiting queue."
        )
        self.cache_hit_rate = gauge("sglang:cache_hit_rate", "The prefix cache hit rate.")
        self.max_total_num_tokens = gauge(
            "sglang:max_total_num_tokens", "Maximum total number of tokens in the KV cache pool."
        )
        self.queue_time = Histogram(
            "sglang:queue_time_seconds",
            "Histogram of queueing time in seconds.",
            _SCHED_LABELS,
            registry=self.registry,
            buckets=_QUEUE_BUCKETS,
        )
        self.prompt_tokens = counter(
            "sglang:prompt_tokens_total", "Number of prefill tokens processed."
        )
        self.generation_tokens = counter(
            "sglang:generation_tokens_total", "Number of generation tokens processed."
        )
        self.cached_tokens = counter(
            "sglang:cached_tokens_total", "Number of cached prompt tokens."
        )
        self.num_requests = counter("sglang:num_requests_total", "Number of requests processed.")
        self.num_aborted = counter(
            "sglang:num_aborted_requests_total", "Number of requests aborted."
        )
        self.ttft = histogram(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            _TTFT_BUCKETS,
        )
        self.itl = histogram(
            "sglang:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            _ITL_BUCKETS,
        )
        self.e2e = histogram(
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
            _E2E_BUCKETS,
        )
        # Label sets exist from the start, as on a fresh SGLang worker.
        counters = (self.prompt_tokens, self.generation_tokens, self.cached_tokens)
        for family in (*counters, self.num_requests, self.num_aborted):
            family.labels(**self._tok)

    def set_scheduler_state(
        self,
        *,
        running: int,
        queued: int,
        used_tokens: int,
        token_usage: float,
        cache_hit_rate: float,
        gen_throughput: float,
        max_total_num_tokens: int,
    ) -> None:
        """Publish the scheduler gauges."""
        labels = self._sched
        self.num_running_reqs.labels(**labels).set(running)
        self.num_queue_reqs.labels(**labels).set(queued)
        self.num_used_tokens.labels(**labels).set(used_tokens)
        self.token_usage.labels(**labels).set(round(token_usage, 4))
        self.cache_hit_rate.labels(**labels).set(round(cache_hit_rate, 4))
        self.gen_throughput.labels(**labels).set(round(gen_throughput, 2))
        self.max_total_num_tokens.labels(**labels).set(max_total_num_tokens)

    def observe_queue_time(self, seconds: float) -> None:
        """One request left the waiting queue after ``seconds``."""
        self.queue_time.labels(**self._sched).observe(seconds)

    def observe_first_token(self, seconds: float) -> None:
        """Time to first token of one request."""
        self.ttft.labels(**self._tok).observe(seconds)

    def observe_inter_token(self, seconds: float, tokens: int = 1) -> None:
        """``tokens`` tokens arrived ``seconds`` after the previous ones."""
        for _ in range(tokens):
            self.itl.labels(**self._tok).observe(seconds / max(1, tokens))

    def observe_finished(
        self, *, prompt_tokens: int, generation_tokens: int, cached_tokens: int, e2e: float
    ) -> None:
        """One request finished (SGLang's ``observe_one_finished_request``)."""
        self.prompt_tokens.labels(**self._tok).inc(prompt_tokens)
        self.generation_tokens.labels(**self._tok).inc(generation_tokens)
        if cached_tokens > 0:
            self.cached_tokens.labels(**self._tok).inc(cached_tokens)
        self.num_requests.labels(**self._tok).inc()
        self.e2e.labels(**self._tok).observe(e2e)

    def observe_aborted(self) -> None:
        """One request was aborted (client went away)."""
        self.num_aborted.labels(**self._tok).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every family."""
        return generate_latest(self.registry)
