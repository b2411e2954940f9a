"""The BullMQ peer on the burst workload: bench/bullmq.cjs on a redis-server of its own
(AOF, appendfsync everysec, as ours), so neither system's Redis work counts for the other.

BullMQ is the queue the first design of this suite used; issue 15 asks for twice its drain rate
on the same machine. Its Node libraries come from package.json (`make tools`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from bench.cluster import ROOT
from bench.workloads import percentiles
from tests.support import RedisServer

PEER = ROOT / "bench" / "bullmq.cjs"


def burst(n: int, warmup: int = 0) -> dict[str, Any]:
    """n jobs due at one instant (after a warm-up burst): drain, lag, Redis work per job."""
    return _run("burst", n, warmup, timeout=300 + n / 50)


def steady(tasks: int, seconds: int) -> dict[str, Any]:
    """`tasks` job schedulers firing every second for `seconds`: fires in the window, lag."""
    return _run("steady", tasks, seconds, timeout=120 + seconds + tasks / 20)


def _run(mode: str, a: int, b: int, timeout: float) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "bullmq").is_dir():
        raise RuntimeError("the BullMQ peer needs node and node_modules/bullmq: run `make tools`")
    redis = RedisServer(appendfsync="everysec")
    redis.start()
    try:
        out = subprocess.run(
            [node, str(PEER), mode, redis.url, str(a), str(b)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        ).stdout
    finally:
        redis.stop()
        shutil.rmtree(redis.dir, ignore_errors=True)
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    figures["lag_ms"] = percentiles(figures["lags_ms"])
    return figures
