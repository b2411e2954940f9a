"""CreateTask one call at a time, 50 in flight, against an api with API_PROCESSES=1 and =2, in
one run, rounds alternating: `python -m bench.api_processes [--calls N] [--rounds R]`.

Each round starts a fresh suite of its own (Redis with AOF everysec, the api with bearer tokens
on, as `make bench` runs it; no scheduler or executor). A connection stays with the server
process the kernel gave it, so the load comes from several connections (channels with their own
subchannel pool) spread over `--clients` client processes: one Python client process tops out near
the rate it measures, and one connection would keep every call on one server process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import grpc

from bench.cluster import Cluster
from bench.workloads import once_at
from schedcore import pb

IN_FLIGHT = 50
CLIENTS = 2  # client processes (--clients), IN_FLIGHT split between them
CHANNELS_PER_CLIENT = 5  # connections per client process


def _client(
    addr: str,
    metadata: tuple[tuple[str, str], ...],
    calls: range,
    in_flight: int,
    ready: Barrier,
    go: Event,
    out: Queue[int],
) -> None:
    """One client process: connects, waits at `ready` and for `go`, then makes `calls` CreateTask
    calls over its own connections, `in_flight` at once; puts the count made on `out`."""

    async def run() -> int:
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.aio.insecure_channel(addr, options=options) for _ in range(CHANNELS_PER_CLIENT)]
        for channel in channels:
            await channel.channel_ready()
        stubs = [pb.task_service_grpc.TaskServiceStub(channel) for channel in channels]
        remaining = iter(calls)
        far = int(time.time() * 1000) + 86_400_000

        async def worker(stub: pb.task_service_grpc.TaskServiceStub) -> None:
            for i in remaining:
                request = pb.CreateTaskRequest(task=once_at(f"api-{i}", far + i))
                await stub.CreateTask(request, timeout=30, metadata=metadata)

        await asyncio.to_thread(ready.wait)
        await asyncio.to_thread(go.wait)
        await asyncio.gather(*(worker(stubs[w % len(stubs)]) for w in range(in_flight)))
        for channel in channels:
            await channel.close()
        return len(calls)

    out.put(asyncio.run(run()))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent not idle (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _api_pids(parent: int) -> list[int]:
    """The api process and its server processes (API_PROCESSES above 1)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [parent, *map(int, children)]


def one_round(processes: int, calls: int, clients: int = CLIENTS) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    with Cluster(schedulers=0, executors=0, env={"API_PROCESSES": str(processes)}) as cluster:
        api = next(p for p in cluster.procs if p.name == "api")
        pids = _api_pids(api.popen.pid)
        ready, go, out = ctx.Barrier(clients + 1), ctx.Event(), ctx.Queue()
        share = calls // clients
        client_procs = [
            ctx.Process(
                target=_client,
                args=(cluster.api_addr, cluster.metadata, range(c * share, (c + 1) * share)),
                kwargs={"in_flight": IN_FLIGHT // clients, "ready": ready, "go": go, "out": out},
            )
            for c in range(clients)
        ]
        for client in client_procs:
            client.start()
        ready.wait(timeout=60)  # every client connected: the clock starts now
        cpu_before = sum(_cpu_seconds(pid) for pid in pids)
        busy_before = _machine_busy_seconds()
        began = time.perf_counter()
        go.set()
        made = sum(out.get(timeout=600) for _ in client_procs)
        seconds = time.perf_counter() - began
        cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu_before
        machine = _machine_busy_seconds() - busy_before
        for client in client_procs:
            client.join(30)
        return {
            "per_second": made / seconds,
            "api_cpu_us_per_call": cpu / made * 1e6,
            "api_cores_busy": cpu / seconds,
            "machine_cores_busy": machine / seconds,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=CLIENTS, help="client processes")
    args = parser.parse_args()
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for r in range(args.rounds):
        for processes in (1, 2) if r % 2 == 0 else (2, 1):
            result = one_round(processes, args.calls, args.clients)
            results[processes].append(result)
            print(
                f"round {r + 1}, API_PROCESSES={processes}: {result['per_second']:,.0f} calls/s", flush=True
            )
    head = (
        f"CreateTask one call at a time, {IN_FLIGHT} in flight, {args.calls:,} calls, {args.clients} clients"
    )
    print(f"{head}, median of {args.rounds}:")
    columns = ("API_PROCESSES", "calls/s per pod (min-max)", "per process", "api CPU per call")
    print("| " + " | ".join(columns) + " | cores busy: api, machine |")
    print("|---|---|---|---|---|")
    summary = {}
    for processes, rounds in results.items():
        rates = [r["per_second"] for r in rounds]
        rate = statistics.median(rates)
        cpu = statistics.median(r["api_cpu_us_per_call"] for r in rounds)
        busy = statistics.median(r["api_cores_busy"] for r in rounds)
        machine = statistics.median(r["machine_cores_busy"] for r in rounds)
        summary[processes] = {"per_second": rate, "min": min(rates), "max": max(rates), "cpu_us": cpu}
        print(
            f"| {processes} | {rate:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | {rate / processes:,.0f} "
            f"| {cpu:,.0f} us | {busy:.2f}, {machine:.2f} of {os.cpu_count()} |"
        )
    print(f"ratio 2/1: {summary[2]['per_second'] / summary[1]['per_second']:.2f}")
    print(json.dumps({"loadavg_after": os.getloadavg(), "summary": summary}))


if __name__ == "__main__":
    main()
