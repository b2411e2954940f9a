"""The peer: APScheduler 3.11 with its Redis job store, on the burst and add-rate workloads.

Run as its own process (`python -m bench.peer REDIS_URL N`), it prints one JSON line. Jobs are
added while the scheduler is started but paused (so each add writes to Redis, as in production),
all due at one instant; each run records when it started; lag = start minus due time.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.redis import RedisJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from bench.workloads import percentiles

started: list[float] = []
lock = threading.Lock()


def job(due: float) -> None:
    now = time.time()
    with lock:
        started.append((now - due) * 1000)


def run_batch(scheduler: BackgroundScheduler, n: int, prefix: str) -> tuple[float, float]:
    """Add n jobs due together while paused, resume, wait until all ran; (add seconds, due)."""
    scheduler.pause()
    began = time.perf_counter()
    lead = max(3.0, n / 300)  # adds run at a few thousand per second at best
    due = time.time() + lead
    at = datetime.fromtimestamp(due, UTC)
    for i in range(n):
        scheduler.add_job(job, "date", run_date=at, args=[due], id=f"{prefix}{i}")
    add_seconds = time.perf_counter() - began
    if time.time() > due:
        raise RuntimeError("adding jobs took longer than the lead time")
    scheduler.resume()
    deadline = time.time() + lead + 120 + n / 50
    while len(started) < n and time.time() < deadline:
        time.sleep(0.05)
    return add_seconds, due


def main(redis_url: str, n: int, warmup: int = 0) -> dict[str, object]:
    url = urlsplit(redis_url)
    store = RedisJobStore(host=url.hostname, port=url.port, db=1)
    scheduler = BackgroundScheduler(
        jobstores={"default": store},
        executors={"default": ThreadPoolExecutor(20)},
        job_defaults={"misfire_grace_time": None, "coalesce": False},
    )
    scheduler.start(paused=True)
    if warmup:  # as for ours: the same small burst first, not measured
        run_batch(scheduler, warmup, "w")
        started.clear()
    add_seconds, _ = run_batch(scheduler, n, "j")
    scheduler.shutdown(wait=True)
    lags = sorted(started)
    drain = max(lags[-1] / 1000, 0.001) if lags else float("nan")
    return {
        "jobs": n,
        "ran": len(lags),
        "add_seconds": round(add_seconds, 3),
        "adds_per_second": round(n / add_seconds),
        "drain_seconds": round(drain, 3),
        "fires_per_second": round(len(lags) / drain) if lags else 0,
        "lag_ms": percentiles(lags),
        "lags_ms": lags,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)))
