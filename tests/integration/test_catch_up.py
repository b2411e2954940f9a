"""Catch-up policies with real processes (docs/engine.md, "Policies"): every-second tasks, one per
policy; the scheduler and the executor are killed (SIGKILL) for a measured gap longer than the
missed-time tolerance and started again. The records of each task's catch-up are exactly what
its policy says, every other occurrence ran once, and none is missing or doubled."""

from __future__ import annotations

import signal
import time
from collections import defaultdict

from schedcore import pb
from tests.integration.engine_support import TERMINAL, suite
from tests.integration.helpers import ms_of
from tests.support import RedisServer, wait_for

P = pb.CatchUpPolicy
S = pb.ExecutionStatus
TOLERANCE_S = 1.0
POLICIES = {
    "skip-all": pb.CatchUp(policy=P.CATCH_UP_POLICY_SKIP_ALL),
    "earliest": pb.CatchUp(),  # the default
    "latest": pb.CatchUp(policy=P.CATCH_UP_POLICY_RUN_LATEST),
    "all-3": pb.CatchUp(policy=P.CATCH_UP_POLICY_RUN_ALL, limit=3),
    "window-2s": pb.CatchUp(policy=P.CATCH_UP_POLICY_RUN_EARLIEST, window={"seconds": 2}),
}


def every_second(name: str, catch_up: pb.CatchUp) -> pb.Task:
    task = pb.Task(
        name=name,
        schedule=pb.Schedule(interval=pb.IntervalSchedule()),
        target=pb.Target(log=pb.LogTarget()),
        catch_up=catch_up,
    )
    task.schedule.interval.every.FromMilliseconds(1_000)
    return task


def test_each_policy_after_the_suite_was_down(redis_srv: RedisServer) -> None:
    env = {"MISSED_TOLERANCE_SECONDS": str(TOLERANCE_S)}
    with suite(redis_srv, schedulers=1, executors=1, **env) as s:
        tasks = {
            name: s.stub.CreateTask(pb.CreateTaskRequest(task=every_second(name, c))).task
            for name, c in POLICIES.items()
        }
        time.sleep(3)
        executor, scheduler = s.processes
        for proc in (scheduler, executor):
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        down = time.time()
        time.sleep(5)
        s.start_executor(s.executor_ports[0], **env)
        s.start_scheduler(**env)
        gap = time.time() - down
        time.sleep(3)
        for task in tasks.values():
            s.stub.PauseTask(pb.PauseTaskRequest(id=task.id))

        def settled() -> bool:
            return all(e.status in TERMINAL for t in tasks.values() for e in s.executions(t.id))

        wait_for(settled, 20)
        runs = {name: s.executions(task.id) for name, task in tasks.items()}
    print(f"suite down {gap:.1f} s")

    for name, records in runs.items():
        nominal = sorted(ms_of(e.nominal_time) for e in records)
        assert nominal == list(range(nominal[0], nominal[-1] + 1000, 1000)), f"{name}: a gap or a double"
        by_fire: dict[int, list[pb.Execution]] = defaultdict(list)
        for e in records:
            by_fire[ms_of(e.fire_time)].append(e)
        [caught] = [sorted(rs, key=lambda e: e.id) for rs in by_fire.values() if len(rs) > 1]
        assert len(caught) >= 4, f"{name}: the gap was too short to test a policy ({len(caught)} late)"
        found = ms_of(caught[0].fire_time)
        ran = [ms_of(e.nominal_time) for e in caught if e.status != S.EXECUTION_STATUS_SKIPPED]
        skipped = [e for e in caught if e.status == S.EXECUTION_STATUS_SKIPPED]
        late = [ms_of(e.nominal_time) for e in caught]
        assert all("missed" in e.status_message for e in skipped)
        assert all(e.status == S.EXECUTION_STATUS_SUCCEEDED for e in caught if e not in skipped), name
        expected = {
            "skip-all": [],
            "earliest": late[:1],
            "latest": late[-1:],
            "all-3": late[:3],
            "window-2s": [t for t in late if found - t <= 2_000][:1],
        }[name]
        assert ran == expected, f"{name}: ran {ran}, expected {expected} of {late}"
        others = [e for e in records if e not in caught]
        assert all(e.status == S.EXECUTION_STATUS_SUCCEEDED for e in others), name
