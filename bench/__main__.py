"""`python -m bench [--smoke] [--out DIR] [--only a,b]`: run the benchmarks, write the report.

Full sizes are the issue's (burst of 10,000; 1,000 cron tasks for 60 s; storage at 100,000
tasks; ...) and take several minutes; --smoke runs every workload tiny, to keep the harness
working in CI (no figure is asserted). Results go to DIR/benchmarks.json, DIR/benchmarks-lag.png
and the section between the markers of DIR/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import bullmq, report, workloads
from bench.cluster import ROOT, Cluster

FULL = {
    "burst": 10_000,
    "steady_tasks": 1_000,
    "steady_seconds": 60,
    "idle": 40,
    "api_calls": 5_000,
    "batch_tasks": 50_000,
    "storage": 100_000,
    "peer": 10_000,
    "scaling": [1, 2, 4],
    # the burst with 2 schedulers and 2 executors: (PARTITIONS, Redis primaries) per run
    "partitions": [[1, 1], [12, 1], [12, 3]],
    "warmup": 500,
}
SMOKE = {
    "burst": 200,
    "steady_tasks": 20,
    "steady_seconds": 3,
    "idle": 3,
    "api_calls": 200,
    "batch_tasks": 2_000,
    "storage": 2_000,
    "peer": 100,
    "scaling": [1, 2],
    "partitions": [[12, 1], [12, 3]],
    "warmup": 20,
}
WORKLOADS = ["burst", "peer", "bullmq", "steady", "idle", "api", "storage", "scaling", "partitions"]
# The partitions workload's replicas: two of each, so the partitions spread over two schedulers;
# and how long it measures Redis' idle CPU before each burst.
PARTITION_REPLICAS = 2
IDLE_PROBE_SECONDS = 2.0


def say(text: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def run(sizes: dict[str, Any], only: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with Cluster() as cluster:

        def fresh() -> None:
            cluster.reset()

        if "burst" in only:
            say(f"burst of {sizes['burst']:,} one-time tasks")
            fresh()
            results["burst"] = workloads.burst(cluster, sizes["burst"], sizes["warmup"])
            say(f"  {results['burst']['fires_per_second']:,} fires/s, lag {results['burst']['lag_ms']}")
        if "peer" in only:
            say(f"APScheduler + Redis job store, {sizes['peer']:,} jobs")
            fresh()
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.peer",
                    cluster.redis.url,
                    str(sizes["peer"]),
                    str(sizes["warmup"]),
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results["peer_burst"] = json.loads(out.strip().splitlines()[-1])
            peer = results["peer_burst"]
            say(f"  {peer['fires_per_second']:,} fires/s, {peer['adds_per_second']:,} adds/s")
        if "bullmq" in only:
            say(f"BullMQ, 1 worker at concurrency 100, {sizes['peer']:,} jobs, its own redis-server")
            results["bullmq_burst"] = bullmq.burst(sizes["peer"], sizes["warmup"])
            say(f"  {results['bullmq_burst']['fires_per_second']:,} jobs/s")
            tasks, seconds = sizes["steady_tasks"], sizes["steady_seconds"]
            say(f"BullMQ steady: {tasks:,} job schedulers every second for {seconds} s")
            q = results["bullmq_steady"] = bullmq.steady(tasks, seconds)
            say(f"  {q['fires_per_second']:,} jobs/s, lag {q['lag_ms']}")
        if "steady" in only:
            say(f"steady: {sizes['steady_tasks']:,} cron tasks every second for {sizes['steady_seconds']} s")
            fresh()
            results["steady"] = workloads.steady(cluster, sizes["steady_tasks"], sizes["steady_seconds"])
            say(f"  {results['steady']['fires_per_second']:,} fires/s, lag {results['steady']['lag_ms']}")
        if "idle" in only:
            say(f"idle precision: {sizes['idle']} tasks firing alone")
            fresh()
            results["idle"] = workloads.idle(cluster, sizes["idle"])
            say(f"  lag {results['idle']['lag_ms']}")
        if "api" in only:
            say(f"api: {sizes['api_calls']:,} CreateTask calls, {sizes['batch_tasks']:,} tasks in batches")
            fresh()
            results["api_create"] = workloads.api_create(cluster, sizes["api_calls"])
            fresh()
            results["api_batch"] = workloads.api_batch(cluster, sizes["batch_tasks"])
            calls, batched = results["api_create"]["per_second"], results["api_batch"]["per_second"]
            say(f"  {calls:,} calls/s; {batched:,} tasks/s batched")
        if "storage" in only:
            say(f"storage: {sizes['storage']:,} tasks")
            fresh()
            results["storage"] = workloads.storage(cluster, sizes["storage"])
            say(
                f"  {results['storage']['bytes_per_task']} bytes per task, "
                f"{results['storage']['audit_bytes_per_event']} per audit event"
            )
    if "scaling" in only:
        results["scaling"] = []
        for replicas in sizes["scaling"]:
            say(f"scaling: {replicas} scheduler(s) and executor(s), burst of {sizes['burst']:,}")
            with Cluster(schedulers=replicas, executors=replicas) as cluster:
                figures = workloads.burst(cluster, sizes["burst"], sizes["warmup"])
            results["scaling"].append(
                {
                    "schedulers": replicas,
                    "executors": replicas,
                    "tasks": figures["tasks"],
                    "fires_per_second": figures["fires_per_second"],
                    "lag_ms": figures["lag_ms"],
                    "cpu": figures["cpu_seconds"],
                }
            )
            say(f"  {figures['fires_per_second']:,} fires/s")
    if "partitions" in only:
        results["partitions"] = partition_runs(sizes)
    return results


def partition_runs(sizes: dict[str, Any]) -> list[dict[str, Any]]:
    """The burst on one redis-server and on a Redis Cluster, with PARTITIONS partitions."""
    runs = []
    replicas = PARTITION_REPLICAS
    for partitions, primaries in sizes["partitions"]:
        where = "one redis-server" if primaries == 1 else f"a Redis Cluster of {primaries} primaries"
        say(
            f"partitions: P={partitions} on {where}, {replicas} schedulers and {replicas} executors, "
            f"burst of {sizes['burst']:,}"
        )
        suite = Cluster(schedulers=replicas, executors=replicas, partitions=partitions, primaries=primaries)
        with suite as cluster:
            figures = workloads.burst(cluster, sizes["burst"], sizes["warmup"], IDLE_PROBE_SECONDS)
        dropped = ("lags_ms", "cpu_seconds", "create_seconds", "bytes_per_task", "bytes_per_execution")
        runs.append(
            {
                "partitions": partitions,
                "primaries": primaries,
                "schedulers": replicas,
                "executors": replicas,
                **{k: v for k, v in figures.items() if k not in dropped},
                "cpu": figures["cpu_seconds"],
            }
        )
        say(
            f"  {figures['fires_per_second']:,} fires/s; Redis CPU per execution by primary "
            f"{figures['redis_cpu_us_per_execution_by_primary']} us"
        )
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every workload, tiny (CI)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs", help="where the report goes (default docs/)"
    )
    parser.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {WORKLOADS}")
    args = parser.parse_args()
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    began = time.monotonic()
    results: dict[str, Any] = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "command": "make bench" if not args.smoke else "python -m bench --smoke",
        "machine": report.machine(),
        "sizes": SMOKE if args.smoke else FULL,
        "workloads": run(SMOKE if args.smoke else FULL, only),
    }
    results["seconds"] = round(time.monotonic() - began, 1)
    report.write(results, args.out, None)
    say(f"done in {results['seconds']} s: {args.out / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
