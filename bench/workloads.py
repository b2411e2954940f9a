"""Our workloads (issue: burst, steady, idle precision, API, storage). Each returns a dict of
figures; the harness in __main__ runs them and writes the report. Lag is an execution's start
time (on the executor) minus its nominal time, as the api reports it."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from bench.cluster import Cluster
from schedcore import pb
from schedcore.store.keys import Keys, Partitions

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


def request_id_in(parts: Partitions, partition: int) -> str:
    """A fresh request id that names `partition` (Partitions.of_request)."""
    while True:
        request_id = secrets.token_hex(8)
        if parts.of_request(request_id) == partition:
            return request_id


def create_all(
    stub: pb.task_service_grpc.TaskServiceStub,
    tasks: Iterable[pb.Task],
    partitions: int = 1,
    batch: int = BATCH,
) -> list[pb.Task]:
    """BatchCreateTasks in calls of `batch`. The api puts a whole call in one partition (the one
    its first request id names, else a random one): with several partitions the calls take them
    in turn, each naming its own by the first item's request id."""
    parts = Partitions(count=partitions)
    out: list[pb.Task] = []
    chunk: list[pb.Task] = []
    for task in [*tasks, None]:
        if task is not None:
            chunk.append(task)
        if chunk and (task is None or len(chunk) == batch):
            requests = [pb.CreateTaskRequest(task=t) for t in chunk]
            if partitions > 1:
                requests[0].request_id = request_id_in(parts, len(out) // batch % partitions)
            out += stub.BatchCreateTasks(pb.BatchCreateTasksRequest(requests=requests), timeout=60).tasks
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
    """Executions ended over the last 10 minutes (longer than any wait here). GetStats reads each
    partition's minute stats of the window: a short one keeps this poll light on the api and
    Redis being measured."""
    stats = stub.GetStats(pb.GetStatsRequest(window=Duration(seconds=600)), timeout=30)
    return sum(c.count for c in stats.executions)


def wait_ended(stub: pb.task_service_grpc.TaskServiceStub, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while ended(stub) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {ended(stub)} of {count} executions ended within {timeout:.0f} s")
        time.sleep(0.1)


def used_memory(cluster: Cluster) -> int:
    """Redis used_memory, summed over the primaries."""
    total = 0
    for client in cluster.primary_clients():
        with client:
            total += int(client.info("memory")["used_memory"])
    return total


def redis_work(cluster: Cluster) -> list[tuple[int, float]]:
    """Per primary: (commands run so far, CPU seconds so far: INFO cpu, used_cpu_sys +
    used_cpu_user); commands inside scripts count one by one, the script calls themselves
    (EVALSHA) do not."""
    out = []
    for client in cluster.primary_clients():
        with client:
            stats = client.info("commandstats")
            cpu = client.info("cpu")
        calls = sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_evalsha", "cmdstat_eval"))
        out.append((calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])))
    return out


def warm_up(cluster: Cluster, n: int) -> None:
    """A small burst run to its end, then Redis emptied: the processes have loaded their
    scripts, warmed their caches and opened their streams before anything is measured."""
    if n <= 0:
        return
    stub = stub_for(cluster)
    due = int(time.time() * 1000) + 1500
    create_all(stub, (once_at(f"warm-{i}", due) for i in range(n)), *spread(cluster, n))
    wait_ended(stub, n, timeout=60)
    cluster.reset()


def spread(cluster: Cluster, n: int) -> tuple[int, int]:
    """create_all's (partitions, batch) for n tasks: an equal share in every partition."""
    return cluster.partitions, min(BATCH, -(-n // cluster.partitions))


def idle_cpu(cluster: Cluster, seconds: float) -> list[float]:
    """Each primary's CPU seconds per second while nothing is due (the schedulers' polling of
    their partitions, heartbeats)."""
    before = redis_work(cluster)
    time.sleep(seconds)
    after = redis_work(cluster)
    return [(a[1] - b[1]) / seconds for b, a in zip(before, after, strict=True)]


def burst(cluster: Cluster, n: int, warmup: int = 0, idle_s: float = 0) -> dict[str, Any]:
    """n one-time tasks due at the same instant (an equal share in each partition): time to
    drain, fires per second, lag, and what each Redis primary did. With `idle_s`, each
    primary's idle CPU is measured that long first: the share of its figure that polling with
    nothing due would account for over the measured window."""
    warm_up(cluster, warmup)
    idle = idle_cpu(cluster, idle_s) if idle_s > 0 else []
    stub = stub_for(cluster)
    lead_ms = 2000 + n // 2  # creating them must end before they come due
    due = int(time.time() * 1000) + lead_ms
    mem0 = used_memory(cluster)
    created = time.monotonic()
    create_all(stub, (once_at(f"burst-{i}", due) for i in range(n)), *spread(cluster, n))
    create_s = time.monotonic() - created
    mem_tasks = used_memory(cluster)
    cpu0, work0, began = cluster.cpu(), redis_work(cluster), time.monotonic()
    wait_ended(stub, n, timeout=120 + n / 100)
    cpu1, work1, window_s = cluster.cpu(), redis_work(cluster), time.monotonic() - began
    records = executions(stub)
    assert len(records) == n, f"{len(records)} executions for {n} occurrences"
    assert all(e.status == pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED for e in records)
    starts = [e.start_time.ToMilliseconds() for e in records]
    lags = [e.lag.ToMilliseconds() for e in records]
    drain_ms = max(max(starts) - due, 1)
    parts = Partitions(count=cluster.partitions)
    homes = [cluster.primary_of(p) for p in range(parts.count)]
    on_primary = [0] * len(work0)
    for e in records:
        on_primary[homes[parts.of_execution(e.id)]] += 1
    commands = sum(w1[0] - w0[0] for w0, w1 in zip(work0, work1, strict=True))
    redis_cpu = [w1[1] - w0[1] for w0, w1 in zip(work0, work1, strict=True)]
    figures: dict[str, Any] = {
        "tasks": n,
        "create_seconds": round(create_s, 3),
        "drain_seconds": drain_ms / 1000,
        "fires_per_second": round(n / (drain_ms / 1000)),
        "lag_ms": percentiles(lags),
        "lags_ms": lags,
        "cpu_seconds": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu1},
        # from fire to recorded result (with the few GetStats calls that wait for the end),
        # summed over the primaries
        "redis_commands_per_execution": round(commands / n, 1),
        "redis_cpu_us_per_execution": round(sum(redis_cpu) * 1e6 / n),
        # each primary's CPU over the burst / all n executions, and how many of them it held
        "redis_cpu_us_per_execution_by_primary": [round(cpu * 1e6 / n) for cpu in redis_cpu],
        "executions_by_primary": on_primary,
        "bytes_per_task": round((mem_tasks - mem0) / n),
        "bytes_per_execution": round((used_memory(cluster) - mem_tasks) / n),
    }
    if idle:
        figures["measured_seconds"] = round(window_s, 2)
        figures["redis_idle_cpu_ms_per_second_by_primary"] = [round(rate * 1e3, 1) for rate in idle]
        figures["redis_idle_cpu_us_per_execution_by_primary"] = [
            round(rate * window_s * 1e6 / n) for rate in idle
        ]
    return figures


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
