"""OpenTelemetry tracing: one trace per saga, across every process it touches.

Each saga starts a trace with a root span named after it (its id as an attribute), kept in
the saga's record as a W3C `traceparent`, so that every later piece of work on the saga
(a drive after a restart, an event handled in another service) joins the same trace. Calls
carry the context in the `traceparent` header, events in their envelope.

Spans are exported with OTLP over HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set. Without it nothing would ever read them, so none is
recorded (the sampler says no), but every span still has its context: the trace id exists, is
kept with the saga, travels with every call and event, and is logged, at a fraction of the
cost. The SDK reads its other OTEL_* settings itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Span, SpanKind

tracer = trace.get_tracer("saga")


def setup_tracing(service: str) -> None:
    """Install this process's tracer provider (once: later calls, as in tests, keep the first)."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    exported = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                    or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    provider = TracerProvider(resource=Resource.create({"service.name": service}),
                              sampler=None if exported else ALWAYS_OFF)
    if exported:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def start_saga_trace(name: str, saga_id: str, attributes: Mapping[str, Any] | None = None) -> str:
    """Open a new trace for a saga with its root span, and end the root at once (it marks the
    start; the work comes in child spans, which a crash cannot leave without a root).
    Returns the root's traceparent, for the saga's record."""
    root = tracer.start_span(name, context=Context(), kind=SpanKind.INTERNAL,
                             attributes={"saga.id": saga_id, **(attributes or {})})
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(root))
    root.end()
    return carrier["traceparent"]


def trace_id(traceparent: str | None) -> str | None:
    """The 32 hex digits of a traceparent's trace id."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def parent(traceparent: str | None) -> Context:
    """The context a traceparent names (an empty one for none)."""
    return propagate.extract({"traceparent": traceparent} if traceparent else {})


def current_traceparent() -> str | None:
    """The traceparent of the span this thread is in, to hand on with a call or an event."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def inject(headers: dict[str, str]) -> None:
    """Put the current trace context into outgoing HTTP headers."""
    propagate.inject(headers)


@contextmanager
def span_in(name: str, parent_context: Context | Mapping[str, str] | None = None,
            kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None
            ) -> Iterator[Span]:
    """A span that is current while the block runs, as a child of `parent_context` (a Context,
    or the headers of an incoming request) or of whatever span is current."""
    if parent_context is not None and not isinstance(parent_context, Context):  # headers
        parent_context = propagate.extract(parent_context)
    token = context.attach(parent_context) if parent_context is not None else None
    try:
        with tracer.start_as_current_span(name, kind=kind, attributes=dict(attributes or {})) as span:
            yield span
    finally:
        if token is not None:
            context.detach(token)


def start_server_span(name: str, headers: Mapping[str, str] | Any,
                      attributes: Mapping[str, Any]) -> tuple[Span, object]:
    """A span for a request being served, a child of the caller's (its traceparent header), made
    current; end it with `end_server_span`."""
    incoming = propagate.extract(headers)
    span = tracer.start_span(name, context=incoming, kind=SpanKind.SERVER, attributes=dict(attributes))
    return span, context.attach(trace.set_span_in_context(span, incoming))


def end_server_span(span: Span, token: object, status_code: int) -> None:
    span.set_attribute("http.response.status_code", status_code)
    if status_code >= 500:
        span.set_status(trace.StatusCode.ERROR)
    span.end()
    context.detach(token)  # type: ignore[arg-type]
