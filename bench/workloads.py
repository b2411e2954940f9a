"""Our workloads (issue: burst, steady, idle precision, API, storage). Each returns a dict of
figures; the harness in __main__ runs them and writes the report. Lag is an execution's start
time (on the executor) minus its nominal time, as the api reports it."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from bench.cluster import Cluster
from schedcore import pb
from schedcore.store.keys import Keys

TERMINAL = pb.TERMINAL_STATUSES
BATCH = 1000


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def ms_ts(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def stub_for(cluster: Cluster) -> pb.task_service_grpc.TaskServiceStub:
    channel = cluster.channel(options=[("grpc.max_receive_message_length", 64 << 20)])
    return pb.task_service_grpc.TaskServiceStub(channel)


def once_at(name: str, ms: int) -> pb.Task:
    task = pb.Task(name=name)
    task.schedule.once.run_time.FromMilliseconds(ms)
    task.target.log.SetInParent()
    return task


def every_second(name: str) -> pb.Task:
    task = pb.Task(name=name)
    task.schedule.cron.expression = "* * * * * *"
    task.target.log.SetInParent()
    return task


def create_all(stub: pb.task_service_grpc.TaskServiceStub, tasks: Iterable[pb.Task]) -> list[pb.Task]:
    """BatchCreateTasks in calls of 1,000."""
    out: list[pb.Task] = []
    chunk: list[pb.Task] = []
    for task in [*tasks, None]:
        if task is not None:
            chunk.append(task)
        if chunk and (task is None or len(chunk) == BATCH):
            request = pb.BatchCreateTasksRequest(requests=[pb.CreateTaskRequest(task=t) for t in chunk])
            out += stub.BatchCreateTasks(request, timeout=60).tasks
            chunk = []
    return out


def executions(stub: pb.task_service_grpc.TaskServiceStub, **filters: Any) -> list[pb.Execution]:
    out: list[pb.Execution] = []
    token = ""
    while True:
        page = stub.ListExecutions(
            pb.ListExecutionsRequest(page_size=1000, page_token=token, **filters), timeout=60
        )
        out += page.executions
        token = page.next_page_token
        if not token:
            return out


def ended(stub: pb.task_service_grpc.TaskServiceStub) -> int:
    stats = stub.GetStats(pb.GetStatsRequest(window=Duration(seconds=3600)), timeout=30)
    return sum(c.count for c in stats.executions)


def wait_ended(stub: pb.task_service_grpc.TaskServiceStub, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while ended(stub) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {ended(stub)} of {count} executions ended within {timeout:.0f} s")
        time.sleep(0.1)


def used_memory(cluster: Cluster) -> int:
    return int(cluster.client().info("memory")["used_memory"])


def redis_work(cluster: Cluster) -> tuple[int, float]:
    """(commands run so far, Redis CPU seconds so far): commands inside scripts count one by one,
    the script calls themselves (EVALSHA) do not."""
    client = cluster.client()
    stats = client.info("commandstats")
    calls = sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_evalsha", "cmdstat_eval"))
    cpu = client.info("cpu")
    return calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def warm_up(cluster: Cluster, n: int) -> None:
    """A small burst run to its end, then Redis emptied: the processes have loaded their
    scripts, warmed their caches and opened their streams before anything is measured."""
    if n <= 0:
        return
    stub = stub_for(cluster)
    due = int(time.time() * 1000) + 1500
    create_all(stub, (once_at(f"warm-{i}", due) for i in range(n)))
    wait_ended(stub, n, timeout=60)
    cluster.reset()


def burst(cluster: Cluster, n: int, warmup: int = 0) -> dict[str, object]:
    """n one-time tasks due at the same instant: time to drain, fires per second, lag."""
    warm_up(cluster, warmup)
    stub = stub_for(cluster)
    lead_ms = 2000 + n // 2  # creating them must end before they come due
    due = int(time.time() * 1000) + lead_ms
    mem0 = used_memory(cluster)
    created = time.monotonic()
    create_all(stub, (once_at(f"burst-{i}", due) for i in range(n)))
    create_s = time.monotonic() - created
    mem_tasks = used_memory(cluster)
    cpu0, work0 = cluster.cpu(), redis_work(cluster)
    wait_ended(stub, n, timeout=120 + n / 100)
    cpu1, work1 = cluster.cpu(), redis_work(cluster)
    records = executions(stub)
    assert len(records) == n, f"{len(records)} executions for {n} occurrences"
    assert all(e.status == pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED for e in records)
    starts = [e.start_time.ToMilliseconds() for e in records]
    lags = [e.lag.ToMilliseconds() for e in records]
    drain_ms = max(max(starts) - due, 1)
    return {
        "tasks": n,
        "create_seconds": round(create_s, 3),
        "drain_seconds": drain_ms / 1000,
        "fires_per_second": round(n / (drain_ms / 1000)),
        "lag_ms": percentiles(lags),
        "lags_ms": lags,
        "cpu_seconds": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu1},
        # from fire to recorded result (with the few ListExecutions calls that wait for the end)
        "redis_commands_per_execution": round((work1[0] - work0[0]) / n, 1),
        "redis_cpu_us_per_execution": round((work1[1] - work0[1]) * 1e6 / n),
        "bytes_per_task": round((mem_tasks - mem0) / n),
        "bytes_per_execution": round((used_memory(cluster) - mem_tasks) / n),
    }


def steady(cluster: Cluster, tasks: int, seconds: int) -> dict[str, object]:
    """`tasks` cron tasks firing every second for `seconds`: fires per second, lag, CPU."""
    stub = stub_for(cluster)
    created = create_all(stub, (every_second(f"tick-{i}") for i in range(tasks)))
    time.sleep(2.5)  # let them settle into their rhythm
    start_ms = (int(time.time() * 1000) // 1000 + 1) * 1000
    time.sleep((start_ms - time.time() * 1000) / 1000)
    cpu0 = cluster.cpu()
    time.sleep(seconds)
    cpu1 = cluster.cpu()
    end_ms = start_ms + seconds * 1000
    for task in created:
        stub.PauseTask(pb.PauseTaskRequest(id=task.id), timeout=10)
    time.sleep(3)  # the last ones finish
    window = [
        e
        for e in executions(stub, start_time=ms_ts(start_ms), end_time=ms_ts(end_ms))
        if e.status in TERMINAL
    ]
    lags = [e.lag.ToMilliseconds() for e in window]
    return {
        "tasks": tasks,
        "seconds": seconds,
        "expected_fires": tasks * seconds,
        "fires": len(window),
        "fires_per_second": round(len(window) / seconds),
        "lag_ms": percentiles(lags),
        "lags_ms": lags,
        "cpu_percent": {k: round(100 * (cpu1[k] - cpu0[k]) / seconds, 1) for k in cpu1},
    }


def idle(cluster: Cluster, count: int, spacing_ms: int = 500) -> dict[str, object]:
    """Single tasks firing alone, `spacing_ms` apart: lag."""
    stub = stub_for(cluster)
    first = int(time.time() * 1000) + 2000
    create_all(stub, (once_at(f"alone-{i}", first + i * spacing_ms) for i in range(count)))
    wait_ended(stub, count, timeout=30 + count * spacing_ms / 1000)
    lags = [e.lag.ToMilliseconds() for e in executions(stub)]
    return {"tasks": count, "spacing_ms": spacing_ms, "lag_ms": percentiles(lags)}


def api_create(cluster: Cluster, calls: int, in_flight: int = 64) -> dict[str, object]:
    """CreateTask calls per second with `in_flight` calls outstanding (one client process)."""

    async def run() -> float:
        async with grpc.aio.insecure_channel(cluster.api_addr) as channel:
            stub = pb.task_service_grpc.TaskServiceStub(channel)
            token = cluster.metadata
            remaining = iter(range(calls))
            far = int(time.time() * 1000) + 86_400_000

            async def worker() -> None:
                for i in remaining:
                    await stub.CreateTask(
                        pb.CreateTaskRequest(task=once_at(f"api-{i}", far + i)), timeout=30, metadata=token
                    )

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            return time.perf_counter() - began

    seconds = asyncio.run(run())
    return {
        "calls": calls,
        "in_flight": in_flight,
        "seconds": round(seconds, 3),
        "per_second": round(calls / seconds),
    }


def api_batch(cluster: Cluster, tasks: int, in_flight: int = 4) -> dict[str, object]:
    """Tasks per second through BatchCreateTasks (1,000 per call, `in_flight` calls outstanding)."""

    async def run() -> float:
        options = [("grpc.max_send_message_length", 64 << 20)]
        async with grpc.aio.insecure_channel(cluster.api_addr, options=options) as channel:
            stub = pb.task_service_grpc.TaskServiceStub(channel)
            token = cluster.metadata
            far = int(time.time() * 1000) + 86_400_000
            calls = iter(range(0, tasks, BATCH))

            async def worker() -> None:
                for base in calls:
                    request = pb.BatchCreateTasksRequest(
                        requests=[
                            pb.CreateTaskRequest(task=once_at(f"bulk-{i}", far + i))
                            for i in range(base, min(base + BATCH, tasks))
                        ]
                    )
                    await stub.BatchCreateTasks(request, timeout=60, metadata=token)

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            return time.perf_counter() - began

    seconds = asyncio.run(run())
    return {
        "tasks": tasks,
        "in_flight": in_flight,
        "seconds": round(seconds, 3),
        "per_second": round(tasks / seconds),
    }


def audit_bytes(cluster: Cluster) -> int:
    """Memory of the audit stream (every entry counted: SAMPLES 0)."""
    client = cluster.client()
    try:
        return int(client.memory_usage(Keys().audit, samples=0) or 0)
    finally:
        client.close()


def storage(cluster: Cluster, tasks: int) -> dict[str, object]:
    """Redis memory per stored task (one-time tasks due tomorrow, log target, short names), and
    apart from it, per audit event: the audit stream is bounded by AUDIT_MAX_EVENTS, not by the
    number of tasks, and each creation appended one event."""
    stub = stub_for(cluster)
    before, audit_before = used_memory(cluster), audit_bytes(cluster)
    far = int(time.time() * 1000) + 86_400_000
    create_all(stub, (once_at(f"stored-{i}", far + i) for i in range(tasks)))
    audit = audit_bytes(cluster) - audit_before
    total = used_memory(cluster) - before
    return {
        "tasks": tasks,
        "bytes_per_task": round((total - audit) / tasks),
        "audit_bytes_per_event": round(audit / tasks),
    }
