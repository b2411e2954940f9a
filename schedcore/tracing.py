"""The tracing switch and an execution's trace ids (docs/tracing.md).

Standard library only: a process with tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT) never imports
OpenTelemetry. Hot paths test `ENABLED` (a module global) before they call into schedcore.spans,
which holds the SDK and every span.

An execution's trace id and root span id are derived from its id (sha256), so every process
that handles it joins one trace without storing anything; whether it is traced is decided once,
by the process creating its record, which then carries the trace id (`Execution.trace_id`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import MutableMapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from schedcore import ipb, pb
    from schedcore.settings import Settings
    from schedcore.store.engine import Completion, DispatchItem, FireCommit, Fired

# True once configure() set up an exporter: read on hot paths, so a plain module global.
ENABLED = False
# Probes would drown every other span.
UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_NULL: AbstractContextManager[None] = contextlib.nullcontext()
# Trace ids whose low 64 bits are below this are sampled: TraceIdRatioBased's own rule.
_LOW64 = (1 << 64) - 1
_bound = 0


def bound_for(ratio: float) -> int:
    """TraceIdRatioBased.get_bound_for_rate, so the root spans the SDK samples are exactly the
    executions stamp() marks."""
    return round(ratio * (_LOW64 + 1))


def ids(execution_id: str) -> tuple[int, int]:
    """The execution's trace id (the first 16 bytes of sha256 of its id) and the span id of its
    root span (the next 8)."""
    digest = hashlib.sha256(execution_id.encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


def trace_id(execution_id: str) -> str:
    """The execution's trace id as backends print it (32 hex digits)."""
    return f"{ids(execution_id)[0]:032x}"


def stamp(record: pb.Execution) -> None:
    """Decide whether a new execution is traced and, if so, write its trace id into its record
    (the record's id must be final). Call only when ENABLED."""
    trace, _ = ids(record.id)
    record.trace_id = f"{trace:032x}" if trace & _LOW64 < _bound else ""


def configure(service: str, settings: Settings) -> None:
    """Turn tracing on for this process when OTEL_EXPORTER_OTLP_ENDPOINT is set: the SDK, its
    batch exporter, and the trace ids in the JSON logs. Once per process, before serving."""
    global ENABLED, _bound
    if not settings.otel_endpoint or ENABLED:
        return
    from schedcore import spans  # OpenTelemetry only when tracing is on

    spans.setup(service, settings)
    _bound = bound_for(settings.otel_sample_ratio)
    ENABLED = True


def shutdown() -> None:
    """Export what is buffered and stop the exporter (at the end of the process)."""
    global ENABLED
    if ENABLED:
        from schedcore import spans

        spans.teardown()
        ENABLED = False


# What the services call, each a no-op while tracing is off (the span-making is schedcore.spans').


def fired(commits: Sequence[FireCommit], fired: Sequence[Fired], start_ns: int) -> None:
    """Root spans (`execution.fire`) of the traced runs a firing round created."""
    if not ENABLED:
        return
    records: list[pb.Execution] = []
    leased: list[bool] = []
    for commit, done in zip(commits, fired, strict=True):
        if done.created > 0:
            runs = [r for r in commit.records if r.trace_id]
            records += runs
            leased += [bool(done.leased) and r is commit.records[0] for r in runs]
    if records:
        from schedcore import spans

        spans.roots("execution.fire", records, start_ns, leased)


def created(records: Sequence[pb.Execution], start_ns: int) -> None:
    """Root spans (`execution.create`) of the traced executions an api call created."""
    if ENABLED:
        from schedcore import spans

        spans.roots("execution.create", records, start_ns)


def dispatched(batch: Sequence[DispatchItem], work: Sequence[ipb.WorkItem], address: str) -> None:
    """Dispatch spans of a batch pushed to the executor at `address`; traceparents into `work`."""
    if ENABLED:
        from schedcore import spans

        spans.dispatched([i.execution for i in batch], work, address)


def recorded(pairs: Sequence[tuple[pb.Execution, Completion]], ok: Sequence[bool], start_ns: int) -> None:
    """Record spans of a batch of results: (record before, completion), whether each was written."""
    if ENABLED:
        from schedcore import spans

        spans.recorded([b for b, _ in pairs], [c.execution for _, c in pairs], ok, start_ns)


def attempt(item: ipb.WorkItem) -> AbstractContextManager[Span | None]:
    """The attempt's span while it runs, when its item is traced; else no span."""
    if not (ENABLED and item.traceparent):
        return _NULL
    from schedcore import spans

    return spans.attempt(item)


def attempt_ended(span: Span, status: int, message: str) -> None:
    from schedcore import spans

    spans.attempt_ended(span, status, message)


def http_call(
    method: str, url: str, headers: MutableMapping[str, str]
) -> AbstractContextManager[Span | None]:
    """The http call's span, with its traceparent put in `headers`, inside a traced attempt."""
    if not ENABLED:
        return _NULL
    from schedcore import spans

    return spans.http_call(method, url, headers)


def http_ended(span: Span, ok: bool, message: str, http_status: int | None) -> None:
    from schedcore import spans

    spans.http_ended(span, ok, message, http_status)


def rpc(method: str, metadata: Sequence[tuple[str, str | bytes]]) -> AbstractContextManager[Span | None]:
    """A unary call's server span (health and reflection calls get none)."""
    if not ENABLED or method.startswith(UNTRACED):
        return _NULL
    from schedcore import spans

    return spans.rpc(method, metadata)


def rpc_ended(span: Span | None, code: int, code_name: str) -> None:
    if span is not None:
        from schedcore import spans

        spans.rpc_ended(span, code, code_name)
