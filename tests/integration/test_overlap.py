"""Overlap policies with real processes (docs/engine.md, "Overlap"): every-second tasks whose http
target takes 2.5 s, two schedulers racing, one executor. A target of our own records when each
call started and when it ended (answered, or its connection closed by the executor), so the test
checks what the target lived through, not only the records: its concurrency never exceeds what
the policy allows, each record matches a call, and every occurrence has exactly one record."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict

from schedcore import pb
from tests.integration.engine_support import TERMINAL, suite
from tests.integration.slow_target import TARGET_MS, Call, SlowTarget
from tests.support import RedisServer, wait_for

OV = pb.OverlapPolicy
S = pb.ExecutionStatus
RUN_S = 9


def every_second(name: str, url: str, overlap: pb.Overlap) -> pb.Task:
    task = pb.Task(
        name=name,
        schedule=pb.Schedule(interval=pb.IntervalSchedule()),
        target=pb.Target(http=pb.HttpTarget(url=url)),
        overlap=overlap,
    )
    task.schedule.interval.every.FromMilliseconds(1_000)
    task.timeout.FromSeconds(10)
    return task


def most_at_once(calls: list[Call]) -> int:
    """The most calls in progress at one instant (an end at the instant of a start counts first)."""
    edges = sorted([(c.start, 1) for c in calls] + [(c.end, -1) for c in calls])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


POLICIES = {
    "skip": (pb.Overlap(policy=OV.OVERLAP_POLICY_SKIP), 1),
    "buffer": (pb.Overlap(policy=OV.OVERLAP_POLICY_BUFFER_ONE), 1),
    "cancel": (pb.Overlap(policy=OV.OVERLAP_POLICY_CANCEL_OTHER), 1),
    "allow-2": (pb.Overlap(policy=OV.OVERLAP_POLICY_ALLOW, max_concurrent=2), 2),
}


def test_each_policy_holds_with_two_schedulers_and_a_slow_target(
    redis_srv: RedisServer, target: SlowTarget
) -> None:
    env = {"LEASE_SECONDS": "3"}
    with suite(redis_srv, schedulers=2, executors=1, **env) as s:
        tasks = {
            name: s.stub.CreateTask(
                pb.CreateTaskRequest(task=every_second(name, f"http://127.0.0.1:{target.port}/{name}", o))
            ).task
            for name, (o, _) in POLICIES.items()
        }
        time.sleep(RUN_S)
        for task in tasks.values():
            s.stub.PauseTask(pb.PauseTaskRequest(id=task.id))

        def settled() -> bool:
            return all(
                all(e.status in TERMINAL for e in s.executions(t.id)) and s.executions(t.id)
                for t in tasks.values()
            )

        wait_for(settled, 30)
        time.sleep(0.5)  # the target's last hang-ups are noticed
        for name, (_, limit) in POLICIES.items():
            records = sorted(s.executions(tasks[name].id), key=lambda e: e.nominal_time.ToMilliseconds())
            calls = target.calls[f"/{name}"]
            nominal = [e.nominal_time.ToMilliseconds() for e in records]
            # One record per occurrence: no gap, no duplicate.
            assert nominal == list(range(nominal[0], nominal[-1] + 1, 1_000)), name
            assert len(nominal) >= RUN_S - 2, name
            by_status = defaultdict(list)
            for e in records:
                by_status[e.status].append(e)
            # The target's own concurrency never exceeded the policy's limit.
            assert most_at_once(calls) <= limit, (name, [(c.key, c.start, c.end) for c in calls])
            # Every call is one execution's, once (no repeat without a lost executor).
            keys = [c.key for c in calls]
            assert len(keys) == len(set(keys)), name
            succeeded = {e.id for e in by_status[S.EXECUTION_STATUS_SUCCEEDED]}
            cancelled = {e.id for e in by_status[S.EXECUTION_STATUS_CANCELLED]}
            answered = {c.key for c in calls if not c.closed}
            assert answered == succeeded, name
            assert set(keys) - answered <= cancelled, name
            skipped = by_status[S.EXECUTION_STATUS_SKIPPED]
            assert set(by_status) <= {
                S.EXECUTION_STATUS_SUCCEEDED,
                S.EXECUTION_STATUS_SKIPPED,
                S.EXECUTION_STATUS_CANCELLED,
            }
            if name in ("skip", "allow-2"):
                assert not cancelled and skipped, name
                assert all(e.status_message.startswith("overlap: ") for e in skipped), name
                assert len(succeeded) == len(calls), name
            if name == "buffer":
                # Runs follow each other back to back; what came due while one waited is skipped.
                assert not cancelled and skipped, name
                assert all("waits already" in e.status_message for e in skipped), name
                ordered = sorted(calls, key=lambda c: c.start)
                gaps = [b.start - a.end for a, b in itertools.pairwise(ordered)]
                assert all(0 <= g < 1.0 for g in gaps), (name, gaps)
            if name == "cancel":
                # Each run is stopped by the next occurrence: its call hung up before its answer.
                assert cancelled and not skipped, name
                closed = [c for c in calls if c.closed]
                assert closed and all(c.end - c.start < TARGET_MS / 1000 for c in closed), name
                assert all(
                    "CANCEL_OTHER" in e.status_message for e in by_status[S.EXECUTION_STATUS_CANCELLED]
                ), name


def test_the_rule_is_stored_shown_and_updated_through_the_api(redis_srv: RedisServer, rds: object) -> None:
    from google.protobuf.field_mask_pb2 import FieldMask

    with suite(redis_srv, schedulers=0, executors=0) as s:
        plain = s.stub.CreateTask(
            pb.CreateTaskRequest(task=every_second("plain", "http://127.0.0.1:1/", pb.Overlap()))
        )
        assert not plain.task.HasField("overlap")  # the default is stored as unset
        rule = pb.Overlap(policy=OV.OVERLAP_POLICY_BUFFER_ONE, max_concurrent=2)
        task = s.stub.CreateTask(
            pb.CreateTaskRequest(task=every_second("b", "http://127.0.0.1:1/", rule))
        ).task
        assert s.stub.GetTask(pb.GetTaskRequest(id=task.id)).task.overlap == rule
        task.overlap.CopyFrom(pb.Overlap(policy=OV.OVERLAP_POLICY_SKIP))
        updated = s.stub.UpdateTask(
            pb.UpdateTaskRequest(task=task, update_mask=FieldMask(paths=["overlap"]))
        ).task
        assert updated.overlap == pb.Overlap(policy=OV.OVERLAP_POLICY_SKIP)
