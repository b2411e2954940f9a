"""What REDIS_WAIT_REPLICAS costs the api (docs/partitions.md, "Acknowledged writes"): CreateTask
calls (64 in flight, one client process) and BatchCreateTasks against one redis-server with a
replica, with REDIS_WAIT_REPLICAS=0 and =1, rounds alternating, in one run:
`python -m bench.wait_replicas [--calls N] [--rounds R]`. The scheduler's writes never wait, so
firing is not measured here."""

from __future__ import annotations

import argparse
import json
import os
import statistics

from bench.cluster import Cluster
from bench.workloads import api_batch, api_create


def one_round(wait: int, calls: int, batched: int) -> dict[str, float]:
    with Cluster(schedulers=0, executors=0, replica=True, env={"REDIS_WAIT_REPLICAS": str(wait)}) as cluster:
        create = api_create(cluster, calls)
        batch = api_batch(cluster, batched)
    return {
        "create_per_second": float(str(create["per_second"])),
        "batch_per_second": float(str(batch["per_second"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--batched", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[int, list[dict[str, float]]] = {0: [], 1: []}
    for r in range(args.rounds):
        for wait in (0, 1) if r % 2 == 0 else (1, 0):
            result = one_round(wait, args.calls, args.batched)
            results[wait].append(result)
            print(
                f"round {r + 1}, REDIS_WAIT_REPLICAS={wait}: "
                f"{result['create_per_second']:,.0f} CreateTask/s, "
                f"{result['batch_per_second']:,.0f} tasks/s batched",
                flush=True,
            )
    print(f"median of {args.rounds} (min-max):")
    print("| REDIS_WAIT_REPLICAS | CreateTask calls/s | BatchCreateTasks tasks/s |")
    print("|---|---|---|")
    summary = {}
    for wait, rounds in results.items():
        row = {}
        for key in ("create_per_second", "batch_per_second"):
            values = [r[key] for r in rounds]
            row[key] = (statistics.median(values), min(values), max(values))
        summary[wait] = row
        c, b = row["create_per_second"], row["batch_per_second"]
        print(f"| {wait} | {c[0]:,.0f} ({c[1]:,.0f}-{c[2]:,.0f}) | {b[0]:,.0f} ({b[1]:,.0f}-{b[2]:,.0f}) |")
    ratio = summary[1]["create_per_second"][0] / summary[0]["create_per_second"][0]
    print(f"CreateTask ratio 1/0: {ratio:.2f}")
    print(json.dumps({"loadavg_after": os.getloadavg(), "summary": summary}))


if __name__ == "__main__":
    main()
