"""Jitter (docs/scheduling.md, "Jitter"): a delay per task and nominal time, the same wherever it
is computed, within [0, max], spread over that range; a planned run waits in ready."""

from __future__ import annotations

from collections import Counter

from schedcore import pb
from schedcore.schedule import jitter_ms
from schedcore.store.engine import DueTask
from services.scheduler.plan import plan


def test_the_delay_depends_only_on_task_nominal_time_and_bound() -> None:
    assert jitter_ms("00000000000000aa", 1_800_000_000_000, 5_000) == jitter_ms(
        "00000000000000aa", 1_800_000_000_000, 5_000
    )
    assert jitter_ms("00000000000000aa", 1_800_000_000_000, 0) == 0
    delays = [jitter_ms(f"{i:016x}", 1_800_000_000_000 + 1000 * i, 999) for i in range(20_000)]
    assert min(delays) >= 0 and max(delays) <= 999
    tenths = Counter(d // 100 for d in delays)  # spread evenly: each tenth holds ~2,000
    assert set(tenths) == set(range(10)) and all(1_700 < n < 2_300 for n in tenths.values())
    by_time = {jitter_ms("00000000000000aa", 1_800_000_000_000 + 1000 * i, 999) for i in range(200)}
    assert len(by_time) > 150  # one task's occurrences get different delays


def due(max_jitter_ms: int, nominal: int) -> DueTask:
    spec = pb.Task(name="j", schedule=pb.Schedule(cron=pb.CronSchedule(expression="* * * * * *")))
    if max_jitter_ms:
        spec.max_jitter.FromMilliseconds(max_jitter_ms)
    return DueTask("00000000000000ab", nominal, spec, "1")


def test_a_jittered_run_is_planned_and_waits_in_ready_until_then() -> None:
    nominal = 1_800_000_000_000
    commit = plan(due(60_000, nominal), nominal + 5, 10_000)
    planned = nominal + jitter_ms("00000000000000ab", nominal, 60_000)
    run = commit.records[0]
    assert run.planned_time.ToMilliseconds() == planned
    assert commit.ready_at_ms == max(nominal + 5, planned)
    assert commit.waits == (planned > nominal + 5)
    late = plan(due(60_000, nominal), nominal + 60_001, 100_000)  # found after its planned start
    assert late.ready_at_ms == nominal + 60_001 and not late.waits
    plain = plan(due(0, nominal), nominal + 5, 10_000)
    assert not plain.records[0].HasField("planned_time") and plain.ready_at_ms == nominal + 5
    assert not plain.waits
