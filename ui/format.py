"""Turning api messages into words people read: schedules, states, statuses, times, durations."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from cron_descriptor import Options, get_description
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from schedcore import pb

S = pb.ExecutionStatus
STATUS_LABELS = {
    S.EXECUTION_STATUS_PENDING: "pending",
    S.EXECUTION_STATUS_RUNNING: "running",
    S.EXECUTION_STATUS_SUCCEEDED: "succeeded",
    S.EXECUTION_STATUS_FAILED: "failed",
    S.EXECUTION_STATUS_TIMED_OUT: "timed out",
    S.EXECUTION_STATUS_CANCELLED: "cancelled",
    S.EXECUTION_STATUS_SKIPPED: "skipped",
}
STATUS_COLORS = {
    "succeeded": "#2e9e5b",
    "failed": "#d64545",
    "timed out": "#e8913a",
    "cancelled": "#9aa0a6",
    "skipped": "#c9b458",
    "pending": "#6c8ebf",
    "running": "#3b6fd6",
}
STATE_LABELS = {
    pb.TaskState.TASK_STATE_ACTIVE: "active",
    pb.TaskState.TASK_STATE_PAUSED: "paused",
    pb.TaskState.TASK_STATE_COMPLETED: "completed",
}
# An audit event's action in words (Audit trail, a task's page).
AUDIT_ACTIONS = {
    pb.AuditAction.AUDIT_ACTION_CREATE_TASK: "created task",
    pb.AuditAction.AUDIT_ACTION_UPDATE_TASK: "updated task",
    pb.AuditAction.AUDIT_ACTION_DELETE_TASK: "deleted task",
    pb.AuditAction.AUDIT_ACTION_PAUSE_TASK: "paused task",
    pb.AuditAction.AUDIT_ACTION_RESUME_TASK: "resumed task",
    pb.AuditAction.AUDIT_ACTION_RUN_TASK: "ran task",
    pb.AuditAction.AUDIT_ACTION_BACKFILL_TASK: "backfilled task",
    pb.AuditAction.AUDIT_ACTION_RERUN_EXECUTION: "reran execution",
    pb.AuditAction.AUDIT_ACTION_CANCEL_EXECUTION: "cancelled execution",
    pb.AuditAction.AUDIT_ACTION_CREATE_TOKEN: "created token",
    pb.AuditAction.AUDIT_ACTION_REVOKE_TOKEN: "revoked token",
    pb.AuditAction.AUDIT_ACTION_CREATE_CHANNEL: "created channel",
    pb.AuditAction.AUDIT_ACTION_UPDATE_CHANNEL: "updated channel",
    pb.AuditAction.AUDIT_ACTION_DELETE_CHANNEL: "deleted channel",
}
# Streamlit's Material icons render in any browser (emoji need a font the machine may lack).
STATUS_ICONS = {
    "succeeded": ":green[:material/check_circle:]",
    "failed": ":red[:material/error:]",
    "timed out": ":orange[:material/timer_off:]",
    "cancelled": ":gray[:material/block:]",
    "skipped": ":gray[:material/skip_next:]",
    "pending": ":blue[:material/schedule:]",
    "running": ":blue[:material/play_circle:]",
}


def status(value: int) -> str:
    return STATUS_LABELS.get(value, "unknown")  # type: ignore[call-overload]


def state(value: int) -> str:
    return STATE_LABELS.get(value, "unknown")  # type: ignore[call-overload]


@lru_cache(maxsize=1)
def time_zones() -> list[str]:
    """IANA zone names, UTC first."""
    zones = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))
    return ["UTC", *zones]


@lru_cache(maxsize=512)
def cron_words(expression: str) -> str:
    """A cron expression in words; ours puts seconds last (croniter's six fields), while
    cron-descriptor expects them first, so six fields are rotated."""
    fields = expression.split()
    if len(fields) == 6:
        fields = [fields[5], *fields[:5]]
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        return str(get_description(" ".join(fields), options))
    except Exception:  # noqa: BLE001 - any parse failure: the api's validation says what is wrong
        return ""


def when(ms: int | None, zone: str = "UTC") -> str:
    """A point in time, to the second, in `zone`."""
    if ms is None:
        return "—"
    dt = datetime.fromtimestamp(ms / 1000, UTC).astimezone(ZoneInfo(zone))
    return dt.strftime("%Y-%m-%d %H:%M:%S %Z")


def ts(value: Timestamp, zone: str = "UTC") -> str:
    return when(value.ToMilliseconds() if value.ByteSize() else None, zone)


def millis(ms: int | None) -> str:
    """A short duration: 12 ms, 3.4 s, 5 min 2 s, 2 h 5 min."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(ms // 1000, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def dur(value: Duration, present: bool = True) -> str:
    return millis(value.ToMilliseconds()) if present else "—"


def schedule(sched: pb.Schedule, zone: str = "UTC") -> str:
    """A task's schedule in words."""
    if sched.HasField("cron"):
        words = cron_words(sched.cron.expression) or sched.cron.expression
        tz = sched.cron.time_zone or "UTC"
        return f"{words} ({tz})"
    if sched.HasField("once"):
        return f"once at {ts(sched.once.run_time, zone)}"
    if sched.HasField("interval"):
        interval = sched.interval
        start = f" from {ts(interval.start_time, zone)}" if interval.HasField("start_time") else ""
        return f"every {millis(interval.every.ToMilliseconds())}{start}"
    return "—"


def target(tgt: pb.Target) -> str:
    if tgt.HasField("http"):
        method = pb.HttpMethod.Name(tgt.http.method or pb.HttpMethod.HTTP_METHOD_POST)[12:]
        return f"{method} {tgt.http.url}"
    return "log"


def labels(values: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


def parse_labels(text: str) -> dict[str, str]:
    """`k=v` pairs separated by commas or new lines. Raises ValueError naming the bad item."""
    out: dict[str, str] = {}
    for raw in text.replace("\n", ",").split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def parse_headers(text: str) -> dict[str, str]:
    """`Name: value` lines. Raises ValueError naming the bad line."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"{line!r} is not 'Name: value'")
        out[name.strip()] = value.strip()
    return out
