"""schedcore/tracing.py and schedcore/spans.py in one process (docs/tracing.md): derived ids,
the sampling decision, what tracing off costs (nothing loaded), the http header, log lines,
RPC spans. Spans go to a real OTLP receiver in this process; the services end to end are
tests/integration/test_tracing.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from schedcore import ipb, logs, pb, tracing
from schedcore.settings import Settings
from schedcore.store.executions import new_record
from tests.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]
PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING
SKIPPED = pb.ExecutionStatus.EXECUTION_STATUS_SKIPPED
SCHEDULE = pb.ExecutionTrigger.EXECUTION_TRIGGER_SCHEDULE


@pytest.fixture()
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.stop()


@pytest.fixture()
def traced(receiver: OtlpReceiver) -> Iterator[OtlpReceiver]:
    """Tracing on in this process, exporting to `receiver`; off again after (spans flushed)."""
    tracing.configure("executor", Settings(otel_endpoint=receiver.endpoint, instance_id="unit-1"))
    try:
        yield receiver
    finally:
        tracing.shutdown()


@contextlib.contextmanager
def _ratio(ratio: float) -> Iterator[None]:
    """stamp() sampling at `ratio`, as configure() would set it."""
    old = tracing._bound
    tracing._bound = tracing.bound_for(ratio)
    try:
        yield
    finally:
        tracing._bound = old


def test_ids_are_derived_from_the_execution_id() -> None:
    trace_id, root_id = tracing.ids("0123abcd-1700000000000")
    assert (trace_id, root_id) == tracing.ids("0123abcd-1700000000000")
    assert tracing.ids("0123abcd-1700000000001")[0] != trace_id
    assert 0 < trace_id < 1 << 128 and 0 < root_id < 1 << 64
    assert tracing.trace_id("0123abcd-1700000000000") == f"{trace_id:032x}"


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_the_record_is_stamped_exactly_when_the_sdk_samples_its_root(ratio: float) -> None:
    sampler = TraceIdRatioBased(ratio)
    stamped = 0
    with _ratio(ratio):
        for n in range(400):
            record = pb.Execution(id=f"0123abcd-{1700000000000 + n}")
            tracing.stamp(record)
            decision = sampler.should_sample(None, tracing.ids(record.id)[0], "execution.fire").decision
            assert bool(record.trace_id) == (decision is Decision.RECORD_AND_SAMPLE), record.id
            stamped += bool(record.trace_id)
    assert stamped == {0.0: 0, 1.0: 400}.get(ratio, stamped)
    assert ratio != 0.3 or 60 < stamped < 180


def test_with_tracing_off_records_carry_no_trace_id_and_nothing_is_loaded() -> None:
    spec = pb.Task(namespace="default")
    assert not tracing.ENABLED
    assert new_record(spec, "0123abcd", 1700000000000, 1700000000000, PENDING, SCHEDULE).trace_id == ""
    item = ipb.WorkItem(execution_id="x", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    with tracing.attempt(item) as span:
        assert span is None
    headers = {"traceparent": "theirs"}
    with tracing.http_call("POST", "http://example.com/", headers) as span:
        assert span is None
    assert headers == {"traceparent": "theirs"}  # untouched: the task's own headers go as they are
    # No service loads the tracing SDK or the exporter while it is off (redis-py imports
    # OpenTelemetry's metrics SDK by itself once it is installed: not ours to avoid).
    code = (
        "import sys, services.api.app, services.scheduler.app, services.executor.app;"
        "loaded = sorted(m for m in sys.modules if m == 'schedcore.spans'"
        " or m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter')));"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_new_runs_are_stamped_and_skipped_records_are_not(traced: OtlpReceiver) -> None:
    spec = pb.Task(namespace="default")
    run = new_record(spec, "0123abcd", 1700000000000, 1700000000000, PENDING, SCHEDULE)
    assert run.trace_id == tracing.trace_id(run.id)
    assert new_record(spec, "0123abcd", 1700000001000, 1700000000000, SKIPPED, SCHEDULE).trace_id == ""


def test_spans_of_an_attempt_its_http_call_and_its_log_lines(traced: OtlpReceiver) -> None:
    from schedcore import spans

    record = pb.Execution(id="0123abcd-1700000000000", task_id="0123abcd")
    tracing.stamp(record)
    spans.roots("execution.fire", [record], 0)
    item = ipb.WorkItem(execution_id=record.id, task_id="0123abcd", lease_token=1, attempt=1)
    item.target.http.url = "http://user:pw@example.com:8080/hook?token=s3cret"
    spans.dispatched([record], [item], "10.0.0.7:50053")
    trace_id, root_id = tracing.trace_id(record.id), f"{tracing.ids(record.id)[1]:016x}"
    assert item.traceparent.startswith(f"00-{trace_id}-") and item.traceparent.endswith("-01")

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter("executor"))
    logger = logging.getLogger("test.tracing")
    logger.addHandler(handler)
    headers = {"TRACEPARENT": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "TraceState": "x=1", "A": "b"}
    try:
        logger.warning("outside any span")
        with tracing.attempt(item) as attempt:
            assert attempt is not None
            with tracing.http_call("POST", item.target.http.url, headers) as call:
                assert call is not None
                logger.warning("inside the call")
                tracing.http_ended(call, False, "answered 503", 503)
            tracing.attempt_ended(attempt, pb.ExecutionStatus.EXECUTION_STATUS_FAILED, "answered 503")
    finally:
        logger.removeHandler(handler)
    outside, inside = (json.loads(line) for line in out.getvalue().splitlines())
    assert "trace_id" not in outside
    assert inside["trace_id"] == trace_id
    assert headers == {"A": "b", "traceparent": f"00-{trace_id}-{inside['span_id']}-01"}

    tracing.shutdown()  # flush
    got = {s.name: s for s in traced.spans(trace_id)}
    assert set(got) == {"execution.fire", "execution.dispatch", "execution.attempt", "POST"}
    assert got["execution.fire"].span_id == root_id and got["execution.fire"].parent_id == ""
    assert got["execution.dispatch"].parent_id == root_id
    assert got["execution.attempt"].parent_id == got["execution.dispatch"].span_id
    assert got["POST"].parent_id == got["execution.attempt"].span_id
    assert got["POST"].span_id == inside["span_id"]
    assert got["POST"].attribute("url.full") == "http://example.com:8080/hook"  # no query, no password
    assert got["POST"].attribute("http.response.status_code") == 503
    assert got["execution.attempt"].attribute("tasksched.status") == "FAILED"
    assert got["execution.attempt"].span.status.message == "answered 503"
    assert {s.service for s in got.values()} == {"tasksched-executor"}


def test_an_rpc_span_continues_the_callers_trace(traced: OtlpReceiver) -> None:
    caller = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"

    async def call() -> None:
        with tracing.rpc("/scheduler.v1.TaskService/GetTask", [("traceparent", caller)]) as span:
            assert span is not None
            tracing.rpc_ended(span, 5, "NOT_FOUND")

    asyncio.run(call())
    with tracing.rpc("/grpc.health.v1.Health/Check", []) as span:
        assert span is None
    tracing.shutdown()
    [got] = traced.spans("a" * 32)
    assert got.name == "scheduler.v1.TaskService/GetTask" and got.parent_id == "b" * 16
    assert got.attribute("rpc.service") == "scheduler.v1.TaskService"
    assert got.attribute("rpc.grpc.status_code") == 5
