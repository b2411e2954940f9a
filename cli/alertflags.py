"""The task flags of Task.alerts (create, update): who is told, and when, that something went
wrong with the task (docs/alerts.md). On update they change only what they name; any of them
sends the whole policy (update_mask `alerts`)."""

from __future__ import annotations

import argparse

from cli import output, values
from schedcore import pb


def add(parser: argparse.ArgumentParser, *, update: bool) -> None:
    group = parser.add_argument_group("alerts (docs/alerts.md)")
    group.add_argument(
        "--alert-channel",
        action="append",
        default=[],
        metavar="ID",
        help="a channel (schedctl channels) of the task's namespace to tell; repeatable, at most 5"
        + ("; the ones given replace the stored ones" if update else ""),
    )
    group.add_argument(
        "--alert-failures", type=int, metavar="N", help="alert after N executions in a row failed (0: never)"
    )
    group.add_argument(
        "--alert-recovery",
        action=argparse.BooleanOptionalAction,
        help="alert on the first success after a failing alert",
    )
    group.add_argument(
        "--alert-skipped", action=argparse.BooleanOptionalAction, help="alert when occurrences are skipped"
    )
    group.add_argument(
        "--alert-late",
        metavar="DURATION",
        help="alert when a run has not started this long after its time (0: never)",
    )
    group.add_argument(
        "--alert-running", metavar="DURATION", help="alert when an attempt runs longer than this (0: never)"
    )
    if update:
        group.add_argument("--clear-alerts", action="store_true", help="no alerts any more")


def apply(args: argparse.Namespace, task: pb.Task, changed: set[str]) -> None:
    """Apply the alert flags given to `task.alerts`; adds "alerts" to `changed` if any."""
    if getattr(args, "clear_alerts", False):
        task.ClearField("alerts")
        changed.add("alerts")
    alerts = task.alerts  # after a clear: a message read before it no longer belongs to the task
    if args.alert_channel:
        del alerts.channel_ids[:]
        alerts.channel_ids.extend(args.alert_channel)
    if args.alert_failures is not None:
        alerts.consecutive_failures = args.alert_failures
    if args.alert_recovery is not None:
        alerts.recovery = args.alert_recovery
    if args.alert_skipped is not None:
        alerts.skipped = args.alert_skipped
    if args.alert_late is not None:
        alerts.late_start.CopyFrom(values.duration("--alert-late", args.alert_late))
    if args.alert_running is not None:
        alerts.running_longer_than.CopyFrom(values.duration("--alert-running", args.alert_running))
    given = (
        args.alert_failures,
        args.alert_recovery,
        args.alert_skipped,
        args.alert_late,
        args.alert_running,
    )
    if args.alert_channel or any(flag is not None for flag in given):
        changed.add("alerts")


def text(alerts: pb.AlertPolicy) -> str:
    """`3 failures in a row, recovery, late 5m00s -> 0123456789abcdef, ...`."""
    rules = []
    if alerts.consecutive_failures:
        rules.append(f"{alerts.consecutive_failures} failures in a row")
    rules += [name for name, on in (("recovery", alerts.recovery), ("skipped", alerts.skipped)) if on]
    if alerts.late_start.ToMilliseconds():
        rules.append(f"late {output.span(alerts.late_start)}")
    if alerts.running_longer_than.ToMilliseconds():
        rules.append(f"running {output.span(alerts.running_longer_than)}")
    return f"{', '.join(rules) or 'no rule'} -> {', '.join(alerts.channel_ids) or 'no channel'}"
