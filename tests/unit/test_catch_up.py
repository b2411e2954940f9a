"""Catch-up policies in plan() (docs/engine.md, "Policies"): for a task found late, exactly which
occurrences run and which are SKIPPED with which reason, for every policy, with and without a
window and a limit; never more than 100 skipped records, never a gap among them."""

from __future__ import annotations

import pytest

from schedcore import pb
from schedcore.schedule import Window
from schedcore.store.engine import DueTask
from services.scheduler.plan import MAX_SKIPPED_RECORDS, plan

P = pb.CatchUpPolicy
PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING
SKIPPED = pb.ExecutionStatus.EXECUTION_STATUS_SKIPPED
NOMINAL = 1_800_000_000_000  # a whole minute
TOLERANCE = 1_000


def due(policy: int = 0, limit: int = 0, window_ms: int = 0, every_ms: int = 1_000) -> DueTask:
    schedule = pb.Schedule(interval=pb.IntervalSchedule())
    schedule.interval.every.FromMilliseconds(every_ms)
    schedule.interval.start_time.FromMilliseconds(NOMINAL)
    spec = pb.Task(name="c", schedule=schedule, catch_up=pb.CatchUp(policy=policy, limit=limit))  # type: ignore[arg-type]
    if window_ms:
        spec.catch_up.window.FromMilliseconds(window_ms)
    return DueTask("00000000000000cc", NOMINAL, spec, "1")


def outcome(task: DueTask, late_s: int) -> tuple[list[int], list[int], list[str]]:
    """(run offsets s, skipped offsets s, skipped reasons) of the task found late_s after NOMINAL
    (+ 500 ms)."""
    now = NOMINAL + late_s * 1000 + 500
    commit = plan(task, now, TOLERANCE)
    assert commit.next_ms == Window.of(task.spec.schedule).next_after_ms(now)  # continues after now
    runs = [r for r in commit.records if r.status == PENDING]
    skipped = [r for r in commit.records if r.status == SKIPPED]
    assert commit.records == runs + skipped  # runs first: the one leased as it fires is a run
    offset = lambda r: (r.nominal_time.ToMilliseconds() - NOMINAL) // 1000  # noqa: E731
    return [offset(r) for r in runs], [offset(r) for r in skipped], [r.status_message for r in skipped]


@pytest.mark.parametrize("policy", [P.CATCH_UP_POLICY_UNSPECIFIED, P.CATCH_UP_POLICY_RUN_EARLIEST])
def test_the_default_runs_the_earliest_and_skips_the_rest(policy: int) -> None:
    runs, skipped, reasons = outcome(due(policy), 10)
    assert runs == [0] and skipped == list(range(1, 11))
    assert all("missed" in r and "runs the earliest, as 00000000000000cc-1800000000000" in r for r in reasons)


def test_skip_all_runs_none() -> None:
    runs, skipped, reasons = outcome(due(P.CATCH_UP_POLICY_SKIP_ALL), 10)
    assert runs == [] and skipped == list(range(0, 11))
    assert all("runs none of them" in r for r in reasons)


def test_run_latest_runs_the_last_before_now() -> None:
    runs, skipped, _ = outcome(due(P.CATCH_UP_POLICY_RUN_LATEST), 10)
    assert runs == [10] and skipped == list(range(0, 10))
    runs, skipped, reasons = outcome(due(P.CATCH_UP_POLICY_RUN_LATEST), 3600)  # far past 100
    assert runs == [3600] and skipped == list(range(0, MAX_SKIPPED_RECORDS))
    assert all("only the first 100 skipped are recorded" in r for r in reasons)


def test_run_all_runs_every_one_up_to_its_limit() -> None:
    runs, skipped, _ = outcome(due(P.CATCH_UP_POLICY_RUN_ALL, limit=4), 10)
    assert runs == [0, 1, 2, 3] and skipped == list(range(4, 11))
    runs, skipped, _ = outcome(due(P.CATCH_UP_POLICY_RUN_ALL), 5)  # the default limit is 10
    assert runs == [0, 1, 2, 3, 4, 5] and skipped == []


def test_a_window_skips_the_older_occurrences_for_every_policy() -> None:
    window = 3_000  # occurrences at most 3 s before now (10.5 s late): offsets 8, 9, 10
    runs, skipped, reasons = outcome(due(P.CATCH_UP_POLICY_RUN_EARLIEST, window_ms=window), 10)
    assert runs == [8] and skipped == [0, 1, 2, 3, 4, 5, 6, 7, 9, 10]
    assert all("older than the catch-up window of 3 s" in r for r in reasons[:8])
    assert "runs the earliest" in reasons[8]
    runs, _, _ = outcome(due(P.CATCH_UP_POLICY_RUN_ALL, window_ms=window), 10)
    assert runs == [8, 9, 10]
    runs, _, _ = outcome(due(P.CATCH_UP_POLICY_RUN_LATEST, window_ms=window), 10)
    assert runs == [10]
    runs, skipped, _ = outcome(due(P.CATCH_UP_POLICY_RUN_EARLIEST, window_ms=window, every_ms=60_000), 10)
    assert runs == [] and skipped == [0]  # the only late occurrence is outside the window


def test_on_time_nothing_is_caught_up() -> None:
    commit = plan(due(P.CATCH_UP_POLICY_SKIP_ALL), NOMINAL + TOLERANCE, TOLERANCE)
    assert [r.status for r in commit.records] == [PENDING]


@pytest.mark.parametrize("span", [1_000, 59_000, 3_600_000, 86_400_000 * 40])
def test_last_in_finds_the_latest_fire_time_of_any_spacing(span: int) -> None:
    w = Window(every_ms=span, start_ms=NOMINAL)
    high = NOMINAL + 7 * span + span // 2
    assert w.last_in(NOMINAL, high) == NOMINAL + 7 * span
    assert w.last_in(NOMINAL + 8 * span, NOMINAL + 8 * span + span // 2) == NOMINAL + 8 * span
    assert w.last_in(NOMINAL + 1, NOMINAL + span - 1) is None
