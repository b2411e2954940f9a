"""Cancels (ExecuteRequest.cancels) on a real executor over gRPC: an http call aborted mid-call,
a command's whole process group killed, a prefetched item never started, and cancels that name
no attempt the executor holds left without effect. Each is reported once, CANCELLED."""

from __future__ import annotations

import time
from pathlib import Path

from schedcore import ipb, pb
from tests.integration.command_support import COMMAND_USER
from tests.integration.test_command_target import alive, command_item
from tests.integration.test_executor import (
    SUCCEEDED,
    HttpServer,
    SchedulerStream,
    assert_complete,
    executor,
    http_item,
    log_item,
    scheduler_stream,
    set_pace,
    stays,
)
from tests.support import wait_for

CANCELLED = pb.ExecutionStatus.EXECUTION_STATUS_CANCELLED


def cancel_of(
    work: ipb.WorkItem, reason: str = "asked by test", token: int | None = None
) -> ipb.executor_pb2.CancelAttempt:
    return ipb.executor_pb2.CancelAttempt(
        execution_id=work.execution_id,
        lease_token=work.lease_token if token is None else token,
        reason=reason,
    )


def results_for(s: SchedulerStream, work: ipb.WorkItem) -> list[ipb.WorkResult]:
    return [r for r in s.results if r.execution_id == work.execution_id]


def assert_cancelled(result: ipb.WorkResult, work: ipb.WorkItem, reason: str = "asked by test") -> None:
    assert result.status == CANCELLED, result.status_message
    assert result.status_message == f"cancelled: {reason}"
    assert not result.retryable
    assert_complete(result, work)


def test_an_http_call_is_aborted_and_reported_cancelled_once(http_server: HttpServer) -> None:
    work = http_item(http_server.url("/linger/10"), timeout_s=30)
    with executor(executor_concurrency=1, lease_s=0.6) as ex, scheduler_stream(ex, auto_ack=True) as s:
        s.send(demand=1)
        s.wait_granted(1)
        s.send([work], demand=1)
        wait_for(lambda: len(http_server.received) == 1)
        started = time.monotonic()
        s.send(cancels=[cancel_of(work)], demand=1)
        result = s.result(work.execution_id, timeout=5)
        took = time.monotonic() - started
        wait_for(lambda: http_server.hangups == ["/linger/10"], timeout=2)  # the server saw it
        assert stays(lambda: len(results_for(s, work)) == 1, 0.5), "one result, no other"
        s.wait_granted(2)  # the slot is free again
        renewed = sum(1 for r in s.responses for x in r.renewals if x.execution_id == work.execution_id)
        assert stays(
            lambda: (
                sum(1 for r in s.responses for x in r.renewals if x.execution_id == work.execution_id)
                == renewed
            ),
            0.5,
        ), "no renewal once it was stopped"
    assert took < 2.0, f"{took:.2f} s to stop a call"
    assert_cancelled(result, work)
    ran_s = (result.finish_time.ToNanoseconds() - result.start_time.ToNanoseconds()) / 1e9
    assert 0 < ran_s < 3.0, "start_time is when the attempt started, finish_time when it was stopped"
    assert not result.result.HasField("http")


def test_a_command_is_stopped_with_its_whole_process_group(open_dir: Path) -> None:
    pidfile = open_dir / "pids"
    # The shell and its background child both ignore SIGTERM: only SIGKILL of the group stops them.
    script = f"trap '' TERM; sleep 30 & echo $$ $! > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; wait"
    work = command_item("/bin/sh", "-c", script, timeout_s=60)
    with (
        executor(executor_command_targets=True, **COMMAND_USER) as ex,
        scheduler_stream(ex, auto_ack=True) as s,
    ):
        s.send(demand=1)
        s.wait_granted(1)
        s.send([work])
        wait_for(lambda: pidfile.exists())
        pids = [int(p) for p in pidfile.read_text().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        started = time.monotonic()
        s.send(cancels=[cancel_of(work, reason="overlap: newer run")])
        result = s.result(work.execution_id, timeout=10)
        took = time.monotonic() - started
        wait_for(lambda: not any(alive(p) for p in pids), timeout=0.5)
        assert stays(lambda: len(results_for(s, work)) == 1, 0.5)
    assert_cancelled(result, work, reason="overlap: newer run")
    assert took < 4.0, f"{took:.2f} s to stop a program (SIGTERM, SIGKILL after 1 s)"


def test_a_queued_item_is_never_started(http_server: HttpServer) -> None:
    with (
        executor(executor_concurrency=1, executor_prefetch=1, lease_s=0.6) as ex,
        scheduler_stream(ex, auto_ack=True) as s,
    ):
        set_pace(s, 50)  # a recent pace: the prefetch is 1
        before = s.granted
        s.send(demand=2)
        s.wait_granted(before + 2)
        running = http_item(http_server.url("/block/q"), timeout_s=10)
        queued = http_item(http_server.url("/ok"), timeout_s=10)
        s.send([running, queued], demand=0)
        wait_for(lambda: len(http_server.received) == 1)
        asked = time.time_ns()
        s.send(cancels=[cancel_of(queued)])
        result = s.result(queued.execution_id, timeout=2)
        assert not results_for(s, running), "the running one goes on"
        http_server.gate("q").set()
        assert s.result(running.execution_id).status == SUCCEEDED
        assert stays(lambda: len(results_for(s, queued)) == 1, 0.5)
    assert [r["path"] for r in http_server.received] == ["/block/q"], "the cancelled item never ran"
    assert_cancelled(result, queued)
    # Never started: its start is the cancel's, not the item's arrival.
    assert result.start_time.ToNanoseconds() >= asked - 50_000_000
    assert result.finish_time.ToNanoseconds() - result.start_time.ToNanoseconds() < 50_000_000


def test_cancels_for_attempts_not_held_change_nothing(http_server: HttpServer) -> None:
    done = log_item()
    kept = http_item(http_server.url("/block/kept"), timeout_s=10)
    stopped = http_item(http_server.url("/linger/10"), timeout_s=10)
    with executor(executor_concurrency=3) as ex, scheduler_stream(ex, auto_ack=True) as s:
        s.send(demand=3)
        s.wait_granted(3)
        s.send([done, kept, stopped])
        assert s.result(done.execution_id).status == SUCCEEDED
        wait_for(lambda: len(http_server.received) == 2)
        stray = [
            cancel_of(kept, token=kept.lease_token - 1),  # an older lease
            cancel_of(kept, token=kept.lease_token + 1),  # a newer one, not this executor's
            ipb.executor_pb2.CancelAttempt(execution_id="nobody-0", lease_token=kept.lease_token),
            cancel_of(done),  # ended already: its result went out
        ]
        # In the same message, a cancel that does name an attempt held: that one is stopped.
        s.send(cancels=[*stray, cancel_of(stopped)])
        assert_cancelled(s.result(stopped.execution_id, timeout=5), stopped)
        assert stays(lambda: not results_for(s, kept), 0.3), "the stale cancels stopped nothing"
        http_server.gate("kept").set()
        finished = s.result(kept.execution_id)
        assert stays(lambda: len(s.results) == 3, 0.5), "one result each, nothing for the strays"
    assert finished.status == SUCCEEDED
    assert_complete(finished, kept)
    assert [r.status for r in results_for(s, done)] == [SUCCEEDED]
