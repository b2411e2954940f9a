"""The task form's Alerts section, to and from a task's AlertPolicy (docs/alerts.md, "Rules"):
pure functions, as ui/taskform.py (which builds the whole Task with them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schedcore import pb

UNITS = {"seconds": 1, "minutes": 60}

# Api field path (prefix) -> widget key (ui/taskform.py's FIELD_WIDGETS takes these in).
FIELD_WIDGETS = {
    "task.alerts": "e_alerts",  # the policy as a whole: "names channels but sets no rule"
    "task.alerts.channel_ids": "e_alert_channels",
    "task.alerts.consecutive_failures": "e_alert_failures",
    "task.alerts.recovery": "e_alert_recovery",
    "task.alerts.skipped": "e_alert_skipped",
    "task.alerts.late_start": "e_alert_late",
    "task.alerts.running_longer_than": "e_alert_running",
}


def defaults() -> dict[str, Any]:
    """No alerts: no channel, no rule."""
    return {
        "e_alert_channels": [],
        "e_alert_failures": 0,
        "e_alert_recovery": False,
        "e_alert_skipped": False,
        "e_alert_late": 0,
        "e_alert_late_unit": "minutes",
        "e_alert_running": 0,
        "e_alert_running_unit": "minutes",
    }


def _amount(seconds: int) -> tuple[int, str]:
    """A duration as the form shows it: in minutes when it is whole minutes."""
    return (seconds // 60, "minutes") if seconds and seconds % 60 == 0 else (seconds, "seconds")


def from_policy(policy: pb.AlertPolicy) -> dict[str, Any]:
    late, late_unit = _amount(policy.late_start.seconds)
    running, running_unit = _amount(policy.running_longer_than.seconds)
    return {
        "e_alert_channels": list(policy.channel_ids),
        "e_alert_failures": policy.consecutive_failures,
        "e_alert_recovery": policy.recovery,
        "e_alert_skipped": policy.skipped,
        "e_alert_late": late,
        "e_alert_late_unit": late_unit if late else "minutes",
        "e_alert_running": running,
        "e_alert_running_unit": running_unit if running else "minutes",
    }


def to_policy(values: Mapping[str, Any]) -> pb.AlertPolicy | None:
    """The policy the form describes (the api checks it); None when it names nothing at all."""
    policy = pb.AlertPolicy(
        channel_ids=list(values.get("e_alert_channels") or []),
        consecutive_failures=int(values.get("e_alert_failures") or 0),
        recovery=bool(values.get("e_alert_recovery")),
        skipped=bool(values.get("e_alert_skipped")),
    )
    for field, unit in (("late_start", "e_alert_late"), ("running_longer_than", "e_alert_running")):
        seconds = int(values.get(unit) or 0) * UNITS[values.get(f"{unit}_unit") or "minutes"]
        if seconds:
            getattr(policy, field).FromSeconds(seconds)
    return policy if policy.ByteSize() else None


def span(seconds: int) -> str:
    """`90` -> "1 min 30 s", `3600` -> "1 h"."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n} {u}" for n, u in ((hours, "h"), (minutes, "min"), (secs, "s")) if n]
    return " ".join(parts) or "0 s"


def rules(policy: pb.AlertPolicy) -> list[str]:
    """Each rule set, as the end of "alert when ..."."""
    out = []
    if n := policy.consecutive_failures:
        out.append(f"{n} executions in a row fail" if n > 1 else "an execution fails")
    if policy.recovery:
        out.append("it succeeds again after that")
    if policy.skipped:
        out.append("occurrences are skipped")
    if late := policy.late_start.seconds:
        out.append(f"a run has not started {span(late)} after its time")
    if running := policy.running_longer_than.seconds:
        out.append(f"an attempt runs longer than {span(running)}")
    return out


def words(policy: pb.AlertPolicy | None, names: Mapping[str, str]) -> str:
    """The policy in a sentence; `names`: channel id -> how to call it ("ops (webhook)")."""
    said = rules(policy) if policy is not None else []
    ids = list(policy.channel_ids) if policy is not None else []
    if not said and not ids:
        return "No alerts."
    to = ", ".join(names.get(i, f"channel {i}") for i in ids) or "no channel"
    if not said:
        return f"Alerts would go to {to}, but no rule is set: nothing is sent."
    return f"Alerts go to {to} when " + "; when ".join(said) + "."
