"""Every span the suite emits, on the OpenTelemetry SDK (docs/tracing.md, "Spans").

Imported only once tracing is on (schedcore.tracing.configure), and called only through
schedcore.tracing, whose functions do nothing while it is off.

An execution's spans hang under its root span, whose trace and span ids are derived from the
execution id (tracing.ids): the root itself is emitted once, by the process that created the
record (`execution.fire`, `execution.create`), with those ids forced through the id generator;
the others name it as their (remote) parent, so no process needs another's span ids.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator, MutableMapping, Sequence
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from schedcore import ipb, logs, pb, tracing
from schedcore.metrics import project_version
from schedcore.settings import Settings

SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
# The ids start_span gives the span it creates now (an execution's root), else None: random.
_root_ids: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("root_ids", default=None)
_EMPTY = Context()  # no parent: a root span, even inside an RPC's span
_PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = ("traceparent", "tracestate")


class _ExecutionIds(RandomIdGenerator):
    """Random ids, except for the root span of an execution: the ids derived from its id."""

    def generate_trace_id(self) -> int:
        root = _root_ids.get()
        return root[0] if root is not None else super().generate_trace_id()

    def generate_span_id(self) -> int:
        root = _root_ids.get()
        return root[1] if root is not None else super().generate_span_id()


class _State:
    tracer: trace.Tracer = trace.NoOpTracer()
    provider: TracerProvider | None = None


def setup(service: str, settings: Settings) -> None:
    """The SDK: a batch processor exporting over OTLP/gRPC, parent-based ratio sampling."""
    resource = Resource.create(
        {
            "service.name": f"tasksched-{service}",
            "service.instance.id": settings.instance_id,
            "service.version": project_version(),
        }
    )
    exporter = OTLPSpanExporter(
        endpoint=settings.otel_endpoint, insecure=urlsplit(settings.otel_endpoint).scheme == "http"
    )
    sampler = ParentBased(TraceIdRatioBased(settings.otel_sample_ratio))
    provider = TracerProvider(resource=resource, sampler=sampler, id_generator=_ExecutionIds())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _State.provider = provider
    _State.tracer = provider.get_tracer("tasksched", project_version())
    logs.trace_context = current_ids


def teardown() -> None:
    if _State.provider is not None:
        _State.provider.shutdown()  # exports what the batch processor holds
        _State.provider = None
    _State.tracer = trace.NoOpTracer()
    logs.trace_context = None


def current_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids in hex, for the JSON log lines."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def traceparent(span: Span) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-01"


def _under_root(execution_id: str) -> Context:
    """A context whose current span is the execution's root (remote: another process emits it)."""
    trace_id, root_id = tracing.ids(execution_id)
    root = NonRecordingSpan(SpanContext(trace_id, root_id, is_remote=True, trace_flags=SAMPLED))
    return trace.set_span_in_context(root, _EMPTY)


def roots(name: str, records: Sequence[pb.Execution], start_ns: int, leased: Sequence[bool] = ()) -> None:
    """The root span of each traced new execution, from `start_ns` to now. In a call (RunTask),
    each links to the call's span."""
    end = time.time_ns()
    current = trace.get_current_span().get_span_context()
    links = [Link(current)] if current.is_valid else []
    flags = [*leased, *([False] * (len(records) - len(leased)))]
    for record, lease in zip(records, flags, strict=True):
        if not record.trace_id:
            continue
        attributes: dict[str, str | bool] = {
            "tasksched.execution.id": record.id,
            "tasksched.task.id": record.task_id,
        }
        if name == "execution.fire":
            attributes["tasksched.leased_as_fired"] = lease
        else:
            attributes["tasksched.trigger"] = pb.ExecutionTrigger.Name(record.trigger)
        token = _root_ids.set(tracing.ids(record.id))
        try:
            span = _State.tracer.start_span(
                name, context=_EMPTY, attributes=attributes, links=links, start_time=start_ns
            )
        finally:
            _root_ids.reset(token)
        span.end(end)


def dispatched(records: Sequence[pb.Execution], work: Sequence[ipb.WorkItem], address: str) -> None:
    """One dispatch span per traced item pushed on a stream; its traceparent goes in the item."""
    for record, item in zip(records, work, strict=True):
        if not record.trace_id:
            continue
        span = _State.tracer.start_span(
            "execution.dispatch",
            context=_under_root(record.id),
            kind=SpanKind.PRODUCER,
            attributes={
                "tasksched.execution.id": record.id,
                "tasksched.attempt": item.attempt,
                "tasksched.lease_token": item.lease_token,
                "tasksched.executor.address": address,
            },
        )
        item.traceparent = traceparent(span)
        span.end()


def recorded(
    records: Sequence[pb.Execution], after: Sequence[pb.Execution], ok: Sequence[bool], start_ns: int
) -> None:
    """One record span per traced result recorded (or dropped as stale), from `start_ns`."""
    end = time.time_ns()
    for before, record, flag in zip(records, after, ok, strict=True):
        if not before.trace_id:
            continue
        span = _State.tracer.start_span(
            "execution.record",
            context=_under_root(before.id),
            attributes={
                "tasksched.execution.id": before.id,
                "tasksched.attempt": before.attempt,
                "tasksched.status": status_name(record.status),
                "tasksched.recorded": flag,
            },
            start_time=start_ns,
        )
        span.end(end)


@contextlib.contextmanager
def attempt(item: ipb.WorkItem) -> Iterator[Span]:
    """The attempt's span, current while it runs (its http call and log lines are under it)."""
    parent = _PROPAGATOR.extract({"traceparent": item.traceparent}, context=_EMPTY)
    kind = item.target.WhichOneof("kind") if item.HasField("target") else None
    span = _State.tracer.start_span(
        "execution.attempt",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "tasksched.execution.id": item.execution_id,
            "tasksched.task.id": item.task_id,
            "tasksched.attempt": item.attempt,
            "tasksched.lease_token": item.lease_token,
            "tasksched.target": kind or "unknown",
        },
    )
    with trace.use_span(span, end_on_exit=True):
        yield span


@contextlib.contextmanager
def http_call(method: str, url: str, headers: MutableMapping[str, str]) -> Iterator[Span | None]:
    """The http target's client span, under the attempt's, and its traceparent in `headers`
    (replacing any the task set). Nothing when the attempt is not traced."""
    if not trace.get_current_span().is_recording():
        yield None
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # the request fails to build; the span says so
        port = None
    shown = f"[{host}]" if ":" in host else host
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        # No query (it may carry a token) and no user:password.
        "url.full": f"{parts.scheme}://{shown}{f':{port}' if port else ''}{parts.path}",
        "server.address": host,
        "server.port": port or (443 if parts.scheme == "https" else 80),
    }
    span = _State.tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
    for name in [k for k in headers if k.lower() in TRACE_HEADERS]:
        del headers[name]
    headers["traceparent"] = traceparent(span)
    with trace.use_span(span, end_on_exit=True):
        yield span


def status_name(status: int) -> str:
    """SUCCEEDED, FAILED...: an ExecutionStatus without its prefix."""
    return pb.ExecutionStatus.Name(status).removeprefix("EXECUTION_STATUS_")


def attempt_ended(span: Span, status: int, message: str) -> None:
    name = status_name(status)
    span.set_attribute("tasksched.status", name)
    if name != "SUCCEEDED":
        span.set_status(Status(StatusCode.ERROR, message))


def http_ended(span: Span, ok: bool, message: str, http_status: int | None) -> None:
    if http_status is not None:
        span.set_attribute("http.response.status_code", http_status)
    if not ok:
        span.set_status(Status(StatusCode.ERROR, message))


@contextlib.contextmanager
def rpc(method: str, metadata: Sequence[tuple[str, str | bytes]]) -> Iterator[Span]:
    """A unary call's server span, under a traceparent the caller sent, current while it runs."""
    carrier = {k: v for k, v in metadata if k in TRACE_HEADERS and isinstance(v, str)}
    parent = _PROPAGATOR.extract(carrier, context=_EMPTY) if carrier else _EMPTY
    service, _, name = method.lstrip("/").partition("/")
    span = _State.tracer.start_span(
        method.lstrip("/"),
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )
    with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        yield span


def rpc_ended(span: Span, code: int, code_name: str) -> None:
    span.set_attribute("rpc.grpc.status_code", code)
    if code_name != "OK":
        span.set_status(Status(StatusCode.ERROR, code_name))
