"""The workload of a scenario: one-time tasks spread over a window and every-second cron tasks
bounded to that window (start_time/end_time), so the occurrences that come due are known exactly.
Targets are http calls to the sink; `slow_ms` makes the one-time ones slow. The cron tasks take
turns at the overlap policies (ALLOW, SKIP, BUFFER_ONE), so every scenario runs with them in use:
whatever a kill does, each occurrence still gets one record (an overlap SKIP is one)."""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from schedcore import pb
from schedcore.schedule import Window
from schedcore.store.keys import execution_id
from schedcore.timeutil import ms_to_ts
from tests.faults.cluster import Cluster
from tests.faults.scale import Scale

# Calls in flight while creating tasks (both api replicas take turns).
CREATE_CONCURRENCY = 32
OVERLAP_TURNS = (
    pb.OverlapPolicy.OVERLAP_POLICY_ALLOW,
    pb.OverlapPolicy.OVERLAP_POLICY_SKIP,
    pb.OverlapPolicy.OVERLAP_POLICY_BUFFER_ONE,
)


@dataclass
class Workload:
    tasks: list[pb.Task]
    start_ms: int  # first occurrence
    end_ms: int  # last occurrence

    def due(self, until_ms: int | None = None) -> dict[str, tuple[str, int]]:
        """Every occurrence due up to `until_ms` (default: all): execution id -> (task id, ms)."""
        out: dict[str, tuple[str, int]] = {}
        for task in self.tasks:
            w = Window.of(task.schedule)
            current = (self.start_ms if task.schedule.HasField("cron") else w.once_ms or 0) - 1
            while True:
                nxt = w.next_after_ms(current)
                if nxt is None or (until_ms is not None and nxt > until_ms):
                    break
                out[execution_id(task.id, nxt)] = (task.id, nxt)
                current = nxt
        return out

    @property
    def cron_ids(self) -> set[str]:
        return {t.id for t in self.tasks if t.schedule.HasField("cron")}


def slow_share(scale: Scale, per_second: int = 50) -> float:
    """The share of one-time tasks to make slow so that about `per_second` slow ones come due
    each second: what one executor left alone can still carry within the bound."""
    return min(1.0, per_second * scale.window_s / max(1, scale.one_time))


def build(
    cluster: Cluster,
    scale: Scale,
    *,
    slow_ms: int = 0,
    slow_share: float = 1.0,
    lead_s: float | None = None,
    overlap: bool = True,
) -> Workload:
    """Create the tasks; the first occurrence is `lead_s` from now (enough to create them all).
    `slow_share` of the one-time tasks call a target that takes `slow_ms`. `overlap`: the cron
    tasks take turns at the overlap policies (False: all ALLOW)."""
    lead = lead_s if lead_s is not None else 2.0 + scale.one_time / 400
    now = cluster.now_ms()
    start = (now + int(lead * 1000)) // 1000 * 1000 + 1000
    end = start + scale.window_s * 1000
    rng = random.Random(start)
    specs: list[pb.Task] = []
    for i in range(scale.one_time):
        at = rng.randint(start, end)
        path = f"/slow/{slow_ms}" if slow_ms and rng.random() < slow_share else "/ok"
        specs.append(
            pb.Task(
                name=f"once-{i}",
                schedule=pb.Schedule(once=pb.OneTimeSchedule(run_time=ms_to_ts(at))),
                target=pb.Target(http=pb.HttpTarget(url=cluster.sink.url(path))),
            )
        )
    for i in range(scale.cron):
        specs.append(
            pb.Task(
                name=f"cron-{i}",
                schedule=pb.Schedule(
                    cron=pb.CronSchedule(
                        expression="* * * * * *", start_time=ms_to_ts(start), end_time=ms_to_ts(end)
                    )
                ),
                target=pb.Target(http=pb.HttpTarget(url=cluster.sink.url("/ok"))),
                overlap=pb.Overlap(
                    policy=OVERLAP_TURNS[i % len(OVERLAP_TURNS)] if overlap else OVERLAP_TURNS[0]
                ),
            )
        )
    channels = [cluster.stub(api) for api in cluster.apis]

    def create(i: int) -> pb.Task:
        _, stub = channels[i % len(channels)]
        request = pb.CreateTaskRequest(task=specs[i], request_id=str(uuid.uuid4()))
        return stub.CreateTask(request, timeout=30).task

    try:
        with ThreadPoolExecutor(CREATE_CONCURRENCY) as pool:
            tasks = list(pool.map(create, range(len(specs))))
    finally:
        for channel, _ in channels:
            channel.close()
    return Workload(tasks, start, end)
