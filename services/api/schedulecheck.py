"""Validation of when a task runs: its schedule (one-time, interval, cron; bounds), its jitter and
its catch-up policy. Each refusal is added to a Violations naming the field; the normalized
message is returned (docs/scheduling.md)."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from schedcore import pb
from schedcore.errors import Violations
from schedcore.schedule import (
    MAX_INTERVAL_MS,
    MAX_JITTER_MS,
    MIN_INTERVAL_MS,
    Cron,
    ScheduleError,
    Window,
)
from schedcore.timeutil import MAX_MS, duration_to_ms, ms_to_datetime, ms_to_duration, ms_to_ts, ts_to_ms

# Most runs a RUN_ALL catch-up may name (as many as the skipped records one finding keeps).
MAX_CATCH_UP_RUNS = 100


def timestamp_ms(v: Violations, path: str, ts: Timestamp) -> int | None:
    ms = ts_to_ms(ts)
    if not 0 <= ms <= MAX_MS or not 0 <= ts.nanos < 1_000_000_000:
        v.add(path, "must be between 1970-01-01 and 2286-11-20")
        return None
    return ms


def duration_ms(v: Violations, path: str, d: Duration, low_ms: int, high_ms: int) -> int | None:
    ms = duration_to_ms(d)
    if d.seconds < 0 or d.nanos < 0 or not low_ms <= ms <= high_ms:
        v.add(path, f"must be between {low_ms / 1000:g}s and {high_ms / 1000:g}s")
        return None
    return ms


def schedule(
    v: Violations, path: str, sched: pb.Schedule, now_ms: int, *, require_future: bool
) -> tuple[pb.Schedule, Window | None]:
    """Normalize a schedule and build its Window; violations are added to `v`."""
    kind = sched.WhichOneof("kind")
    if kind is None:
        v.add(path, "required: set once.run_time, cron.expression or interval.every")
        return pb.Schedule(), None
    if kind == "once":
        out = _once(v, f"{path}.once", sched.once, now_ms, require_future)
    elif kind == "interval":
        out = _interval(v, f"{path}.interval", sched.interval, now_ms, require_future)
    else:
        out = _cron(v, f"{path}.cron", sched.cron, now_ms, require_future)
    return (pb.Schedule(), None) if out is None else (out, Window.of(out))


def _once(
    v: Violations, path: str, once: pb.OneTimeSchedule, now_ms: int, require_future: bool
) -> pb.Schedule | None:
    if not once.HasField("run_time"):
        v.add(f"{path}.run_time", "required")
        return None
    ms = timestamp_ms(v, f"{path}.run_time", once.run_time)
    if ms is None:
        return None
    if require_future and ms <= now_ms:
        v.add(f"{path}.run_time", _past(ms, now_ms, "a one-time task must run later"))
        return None
    out = pb.Schedule()
    out.once.run_time.CopyFrom(once.run_time)
    return out


def _past(ms: int, now_ms: int, why: str) -> str:
    """The message for a time that must be in the future, naming both times (UTC)."""
    return f"is in the past ({_utc(ms)}, now {_utc(now_ms)}): {why}"


def _utc(ms: int) -> str:
    return ms_to_datetime(ms).strftime("%Y-%m-%d %H:%M:%S UTC")


def _bounds(
    v: Violations,
    path: str,
    sched: pb.CronSchedule | pb.IntervalSchedule,
    now_ms: int,
    require_future: bool,
) -> tuple[int | None, int | None]:
    """The start and end times of a recurring schedule (ms; None: unset or refused)."""
    start_ms = end_ms = None
    if sched.HasField("start_time"):
        start_ms = timestamp_ms(v, f"{path}.start_time", sched.start_time)
    if sched.HasField("end_time"):
        end_ms = timestamp_ms(v, f"{path}.end_time", sched.end_time)
        if end_ms is not None and start_ms is not None and end_ms <= start_ms:
            v.add(f"{path}.end_time", "must be after start_time")
            end_ms = None
        elif end_ms is not None and require_future and end_ms <= now_ms:
            v.add(f"{path}.end_time", _past(end_ms, now_ms, "the schedule would never run again"))
            end_ms = None
    return start_ms, end_ms


def _interval(
    v: Violations, path: str, interval: pb.IntervalSchedule, now_ms: int, require_future: bool
) -> pb.Schedule | None:
    every_ms = None
    if not interval.HasField("every"):
        v.add(f"{path}.every", "required")
    elif interval.every.nanos % 1_000_000:
        v.add(f"{path}.every", "must be whole milliseconds")
    elif (
        not MIN_INTERVAL_MS <= duration_to_ms(interval.every) <= MAX_INTERVAL_MS or interval.every.seconds < 0
    ):
        v.add(f"{path}.every", f"must be between 1s and {MAX_INTERVAL_MS // 86_400_000} days")
    else:
        every_ms = duration_to_ms(interval.every)
    start_ms, end_ms = _bounds(v, path, interval, now_ms, require_future)
    if every_ms is None or (interval.HasField("start_time") and start_ms is None):
        return None
    out = pb.Schedule()
    out.interval.every.CopyFrom(ms_to_duration(every_ms))
    # Unset: anchored now, and stored so, so every replica and every restart keeps this phase.
    out.interval.start_time.CopyFrom(interval.start_time if start_ms is not None else ms_to_ts(now_ms))
    if end_ms is not None:
        out.interval.end_time.CopyFrom(interval.end_time)
    return out


def _cron(
    v: Violations, path: str, cron: pb.CronSchedule, now_ms: int, require_future: bool
) -> pb.Schedule | None:
    time_zone = cron.time_zone.strip() or "UTC"
    try:
        parsed = Cron.parse(cron.expression, time_zone)
    except ScheduleError as exc:
        where = "time_zone" if "time zone" in str(exc) else "expression"
        v.add(f"{path}.{where}", str(exc))
        parsed = None
    start_ms, end_ms = _bounds(v, path, cron, now_ms, require_future)
    if parsed is None:
        return None
    out = pb.Schedule()
    out.cron.expression = parsed.expression
    out.cron.time_zone = time_zone
    if start_ms is not None:
        out.cron.start_time.CopyFrom(cron.start_time)
    if end_ms is not None:
        out.cron.end_time.CopyFrom(cron.end_time)
    return out


# Most executions of one task an overlap rule may let run at once (each fire reads them all).
MAX_CONCURRENT = 100


def catch_up(v: Violations, catch_up: pb.CatchUp) -> pb.CatchUp:
    path = "task.catch_up"
    out = pb.CatchUp()
    if catch_up.policy not in pb.CatchUpPolicy.values():
        v.add(f"{path}.policy", f"unknown policy {catch_up.policy}")
    elif catch_up.policy != pb.CatchUpPolicy.CATCH_UP_POLICY_UNSPECIFIED:
        out.policy = catch_up.policy
    if catch_up.limit and catch_up.policy != pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_ALL:
        v.add(f"{path}.limit", "only with policy RUN_ALL")
    elif not 0 <= catch_up.limit <= MAX_CATCH_UP_RUNS:
        v.add(f"{path}.limit", f"must be between 1 and {MAX_CATCH_UP_RUNS} (0: 10)")
    else:
        out.limit = catch_up.limit
    if catch_up.HasField("window"):
        if catch_up.window.nanos % 1_000_000:
            v.add(f"{path}.window", "must be whole milliseconds")
        elif window_ms := duration_ms(v, f"{path}.window", catch_up.window, 0, MAX_INTERVAL_MS):
            out.window.CopyFrom(ms_to_duration(window_ms))
    return out


def overlap(v: Violations, overlap: pb.Overlap, path: str = "task.overlap") -> pb.Overlap:
    out = pb.Overlap()
    if overlap.policy not in pb.OverlapPolicy.values():
        v.add(f"{path}.policy", f"unknown policy {overlap.policy}")
    elif overlap.policy != pb.OverlapPolicy.OVERLAP_POLICY_UNSPECIFIED:
        out.policy = overlap.policy
    if not 0 <= overlap.max_concurrent <= MAX_CONCURRENT:
        v.add(f"{path}.max_concurrent", f"must be between 1 and {MAX_CONCURRENT} (0: the policy's default)")
    else:
        out.max_concurrent = overlap.max_concurrent
    return out


def max_jitter(v: Violations, path: str, d: Duration) -> int:
    """A max_jitter in ms (0: none, also when refused: the violation is in `v`)."""
    if d.nanos % 1_000_000:
        v.add(path, "must be whole milliseconds")
        return 0
    return duration_ms(v, path, d, 0, MAX_JITTER_MS) or 0
