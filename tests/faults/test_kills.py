"""Scenarios 1-3: kill -9 of schedulers, executors, and of every service at once."""

from __future__ import annotations

from collections import Counter

from tests.faults import workload
from tests.faults.checker import S, audit, read_records
from tests.faults.cluster import cluster
from tests.faults.conftest import Recorder
from tests.faults.scenario import LEASE_S, SLACK_S, TIMEOUT, at_fraction, now_ms, sleep_until

pytestmark = TIMEOUT
SLOW_MS = 1500


def test_1_scheduler_killed_mid_burst_and_started_again(figures: Recorder) -> None:
    with cluster() as c:
        w = workload.build(c, figures.scale)
        victim = c.schedulers[0]
        sleep_until(at_fraction(w.start_ms, w.end_ms, 0.3))
        victim.kill()
        sleep_until(at_fraction(w.start_ms, w.end_ms, 0.7))
        c.restart(victim)
        fig = audit(c, w, "1 scheduler kill -9 mid-burst", bound_s=LEASE_S + SLACK_S)
        fig.notes = "scheduler-0 killed at 30% of the window, started at 70%"
    figures(fig)


def test_2_executor_killed_while_running_slow_targets(figures: Recorder) -> None:
    # one executor left alone must hold every slow call due meanwhile (sleeping calls are cheap)
    with cluster(env={"EXECUTOR_CONCURRENCY": "300"}) as c:
        w = workload.build(c, figures.scale, slow_ms=SLOW_MS, slow_share=workload.slow_share(figures.scale))
        victim = c.executors[0]
        sleep_until(at_fraction(w.start_ms, w.end_ms, 0.5))
        client = c.client()
        running = client.zcard("ts:{0}:inflight")
        client.close()
        victim.kill()
        fig = audit(c, w, "2 executor kill -9 (slow targets)", bound_s=LEASE_S + SLOW_MS / 1000 + SLACK_S)
        fig.notes = f"executor-0 killed at 50% with {running} executions in flight; not restarted"
    figures(fig)


def test_3_every_service_killed_across_fire_times(figures: Recorder) -> None:
    tolerance_s = 1.0
    # lateness beyond this counts as missed (nothing is leased while a task fires: no lease on top)
    missed_after_ms = int(tolerance_s * 1000)
    with cluster(env={"MISSED_TOLERANCE_SECONDS": str(tolerance_s)}) as c:
        scale = figures.scale
        w = workload.build(c, scale)
        sleep_until(at_fraction(w.start_ms, w.end_ms, 0.25))
        down = now_ms()
        for replica in c.replicas.values():
            replica.kill()
        # an occurrence due before the last scheduler died may have fired on time
        dead = now_ms()
        sleep_until(down + missed_after_ms + int(scale.outage_s * 1000))
        respawn = now_ms()
        c.restart(*c.replicas.values())
        up = now_ms()
        fig = audit(
            c,
            w,
            "3 every service kill -9",
            bound_s=LEASE_S + SLACK_S,
            outages=[(down, up)],
            allow_skipped=True,
        )
        # Run once for the window: of the occurrences that were certainly missed, one ran per task.
        due = w.due()
        records = read_records(c, list(due))
        ran: Counter[str] = Counter()
        for execution_id, (task_id, nominal) in due.items():
            record = records.get(execution_id)
            missed = dead < nominal < respawn - missed_after_ms
            if record and missed and task_id in w.cron_ids and record.status != S.EXECUTION_STATUS_SKIPPED:
                ran[task_id] += 1
        twice = {t: n for t, n in ran.items() if n > 1}
        if twice:
            fig.problems.append(f"cron tasks ran more than once for the missed window: {twice}")
        fig.notes = (
            f"all 6 services down {(up - down) / 1000:.1f} s; missed-time policy: "
            f"{fig.skipped} occurrences SKIPPED with the reason, at most one run per task for the window"
        )
        if fig.skipped == 0:
            fig.problems.append("the outage skipped nothing: the missed-time policy was not exercised")
    figures(fig)
