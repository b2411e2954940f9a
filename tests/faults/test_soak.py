"""Scenario 9: a long run with retention on: Redis memory stays flat while executions pile up.

Every-second cron tasks call the sink; the schedulers keep HISTORY_MAX_PER_TASK records per
task, so after a short warm-up Redis holds a constant number of records, and its memory must
not grow with the number of executions. The sink counts every execution (records are trimmed,
by design), so lost and duplicated executions are still counted exactly."""

from __future__ import annotations

import statistics
import threading
import time

from tests.faults import workload
from tests.faults.checker import TERMINAL, Figures, read_records
from tests.faults.cluster import Cluster, cluster, wait_until
from tests.faults.conftest import Recorder
from tests.faults.scale import Scale
from tests.faults.scenario import LEASE_S, SLACK_S, TIMEOUT, now_ms, sleep_until

pytestmark = TIMEOUT
KEEP = 5  # HISTORY_MAX_PER_TASK
WARMUP_S = KEEP + 5  # every task has its full history by then
GROWTH = 0.10  # memory of the last third may exceed the first third's by at most this


class MemoryWatch(threading.Thread):
    def __init__(self, c: Cluster) -> None:
        super().__init__(daemon=True)
        self.client = c.client()
        self.samples: list[tuple[int, int]] = []  # (ms, used_memory)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.5):
            self.samples.append((now_ms(), int(self.client.info("memory")["used_memory"])))

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        self.client.close()


def soak_scale(scale: Scale) -> Scale:
    """The workload of scenario 9: soak_tasks cron tasks over as many seconds as it takes."""
    seconds = scale.soak_executions // scale.soak_tasks
    return Scale(scale.name, 0, scale.soak_tasks, seconds, 0, 0, 0, 0)


def test_9_memory_stays_flat_with_retention(figures: Recorder) -> None:
    soak = soak_scale(figures.scale)
    env = {"HISTORY_MAX_PER_TASK": str(KEEP), "LOG_LEVEL": "WARNING"}
    with cluster(env=env) as c:
        # ALLOW only: this scenario counts executions at the sink (records are trimmed), where an
        # occurrence the overlap policy SKIPPED would count as lost; the others run the policies.
        w = workload.build(c, soak, lead_s=3 + soak.cron / 200, overlap=False)
        watch = MemoryWatch(c)
        watch.start()
        sleep_until(w.end_ms)
        due = w.due()
        # the last occurrence of every task: its record is kept, and must end
        last = {t.id: max(ms for tid, ms in due.values() if tid == t.id) for t in w.tasks}
        last_ids = [i for i, (tid, ms) in due.items() if last[tid] == ms]
        settled = wait_until(
            lambda: (
                all(r.status in TERMINAL for r in read_records(c, last_ids).values())
                and len(read_records(c, last_ids)) == len(last_ids)
            ),
            60,
            0.5,
        )
        time.sleep(1)
        watch.stop()
        counts = c.sink.counts()
        kept = read_records(c, list(due))
        repeated = {k: n for k, n in counts.items() if n > 1}
        explained = read_records(c, list(repeated))
        restarted = c.unexpected_restarts()
    fig = Figures("9 soak, retention on", due=len(due), executions=sum(counts.values()))
    fig.lost = len(due.keys() - counts.keys())
    fig.duplicates = sum(n - 1 for n in counts.values() if n > 1) + sum(
        counts[k] for k in counts.keys() - due.keys()
    )
    slowest = max(
        (r.execution.finish_time.ToMilliseconds() - r.execution.nominal_time.ToMilliseconds())
        for r in kept.values()
        if r.execution.HasField("finish_time")
    )
    fig.slowest_s = round(slowest / 1000, 2)
    steady = [m for t, m in watch.samples if w.start_ms + WARMUP_S * 1000 <= t <= w.end_ms]
    third = max(1, len(steady) // 3)
    early, late = statistics.median(steady[:third]), statistics.median(steady[-third:])
    growth = late / early - 1
    fig.notes = (
        f"{soak.cron} every-second cron tasks for {soak.window_s} s, HISTORY_MAX_PER_TASK={KEEP}; "
        f"Redis used_memory {early / 2**20:.1f} MiB -> {late / 2**20:.1f} MiB ({growth:+.1%}); "
        f"{len(kept)} records kept; slowest of the kept records"
    )
    if not settled:
        fig.problems.append("the last occurrences did not all end")
    if growth > GROWTH:
        fig.problems.append(f"Redis memory grew {growth:.1%} during the steady state")
    if len(kept) > KEEP * len(w.tasks):
        fig.problems.append(f"{len(kept)} records kept, more than {KEEP} per task")
    if fig.lost or fig.duplicates:
        fig.problems.append(f"{fig.lost} executions lost, {fig.duplicates} duplicated")
    for key, n in sorted(repeated.items())[:20]:
        r = explained.get(key)
        why = f"attempts {r.execution.attempt}, reclaims {r.reclaims}" if r else "record trimmed"
        fig.problems.append(f"{key}: {n} calls; {why}")
    if fig.slowest_s > LEASE_S + SLACK_S:
        fig.problems.append(f"slowest {fig.slowest_s} s")
    if restarted:
        fig.problems.append(f"restarted or died: {restarted}")
    figures(fig)
