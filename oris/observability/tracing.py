"""OpenTelemetry spans, exported only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Every request that carries a W3C ``traceparent`` (runs from callers; heartbeats, step reports
and acks from workers, which forward the attempt's trace) becomes a server span in that trace,
so one trace id follows a job from submission through every worker call. Without the variable,
or without the optional ``opentelemetry`` packages, nothing is created or exported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from typing import Any, Protocol

log = logging.getLogger("oris.tracing")
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id inside a valid ``traceparent`` header, for log correlation."""
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip().lower())
    return None if match is None else match.group(1)


class SpanHandle(Protocol):
    """The span of the current request."""

    def finish(self, name: str, attributes: dict[str, Any]) -> None:
        """Name the span after the matched route and attach what the request did."""


class SpanRecorder(Protocol):
    """What the API needs from a tracer."""

    def span(
        self, name: str, traceparent: str | None
    ) -> contextlib.AbstractContextManager[SpanHandle]:
        """A server span, parented by ``traceparent`` when given."""

    def shutdown(self) -> None:
        """Flush and stop exporting."""


class _NoSpan:
    def finish(self, name: str, attributes: dict[str, Any]) -> None:
        return None


class NoTracing:
    """The default: no spans at all."""

    @contextlib.contextmanager
    def span(self, name: str, traceparent: str | None) -> Iterator[SpanHandle]:
        """Nothing to record."""
        yield _NoSpan()

    def shutdown(self) -> None:
        """Nothing to flush."""


class _OtelSpan:
    def __init__(self, span: Any) -> None:
        self._span = span

    def finish(self, name: str, attributes: dict[str, Any]) -> None:
        self._span.update_name(name)
        for key, value in attributes.items():
            if value is not None:
                self._span.set_attribute(key, value)


class OtlpTracing:
    """Spans exported over OTLP/HTTP with the OpenTelemetry SDK."""

    def __init__(self, service_name: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("oris")
        self._propagator = TraceContextTextMapPropagator()

    @contextlib.contextmanager
    def span(self, name: str, traceparent: str | None) -> Iterator[SpanHandle]:
        """A server span in the caller's trace."""
        from opentelemetry.trace import SpanKind

        parent = self._propagator.extract({"traceparent": traceparent}) if traceparent else None
        with self._tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
            yield _OtelSpan(span)

    def shutdown(self) -> None:
        """Flush pending spans."""
        self._provider.shutdown()


def build_tracing(service_name: str = "oris-api") -> SpanRecorder:
    """OTLP export when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (and the SDK is installed)."""
    if not os.environ.get(ENDPOINT_ENV):
        return NoTracing()
    try:
        return OtlpTracing(service_name)
    except ImportError:
        log.warning(
            "%s is set but OpenTelemetry is not installed (pip install 'oris-runtime[otel]'); "
            "no spans are exported",
            ENDPOINT_ENV,
        )
        return NoTracing()
