"""Optional OpenTelemetry traces: one span per pipeline stage.

Off by default, at no cost: the null tracer's spans are one shared no-op
context manager, and OpenTelemetry is not imported. With ``tracing.enabled``
(and the ``tracing`` extra installed), each request gets a ``tollway.request``
span with a child per stage (authenticate, parse, resolve, idempotency,
compress, admit, upstream), exported over OTLP/HTTP or to the console.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from tollway.errors import ConfigError

_NOOP: AbstractContextManager[None] = nullcontext()


class TracingConfig(BaseModel):
    """The ``tracing:`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    service_name: str = "tollway"
    exporter: Literal["otlp", "console"] = "otlp"
    endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces URL (default: the SDK's, from OTEL_* env)."
    )


class Tracer(Protocol):
    """Opens spans; the gateway calls ``span`` around each pipeline stage."""

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Any]: ...


class NullTracer:
    """Tracing off: every span is the same no-op."""

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Any]:
        return _NOOP


class OtelTracer:
    """Spans through the OpenTelemetry SDK (imported only when tracing is on)."""

    def __init__(self, config: TracingConfig, exporter: Any = None) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                "tracing is enabled but OpenTelemetry is not installed: pip install "
                "'tollway[tracing]'",
                path="tracing.enabled",
            ) from exc
        provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
        if exporter is not None:  # tests hand in an in-memory exporter
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif config.exporter == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(config.endpoint)))
        self.provider = provider
        self._tracer = provider.get_tracer("tollway")

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Any]:
        return self._span(name, attributes)

    @contextmanager
    def _span(self, name: str, attributes: dict[str, Any]) -> Iterator[Any]:
        with self._tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span

    def shutdown(self) -> None:
        """Flush and stop the exporter."""
        self.provider.shutdown()


def trace_id_of(span: Any) -> str | None:
    """The 32-hex-digit trace id of an OpenTelemetry span; None for the null tracer's."""
    if span is None:
        return None
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def build_tracer(config: TracingConfig) -> Tracer:
    """The tracer the configuration asks for."""
    return OtelTracer(config) if config.enabled else NullTracer()
