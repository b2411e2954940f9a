"""The flags that describe a task (create, update), and applying them to a Task message.

On update they change only what they name: `--tz` alone changes a cron task's zone, `--header`
sets one header of an http target, `--label` sets one label. The top-level fields touched become
the update_mask.

Secret header and secret environment values never come back from the api (names only, with empty
values, which an update keeps as stored), nor do signing secrets (one empty string each, which an
update keeps); `--secret-header 'NAME: @FILE'`, `--secret-env NAME=@FILE` and `--signing-secret
@FILE` read the value from a file so that it stays out of shell history and process listings."""

from __future__ import annotations

import argparse
from collections.abc import MutableMapping

from cli import alertflags, values
from cli.errors import UsageError
from schedcore import pb

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
OVERLAP = {
    "allow": pb.OverlapPolicy.OVERLAP_POLICY_ALLOW,
    "skip": pb.OverlapPolicy.OVERLAP_POLICY_SKIP,
    "buffer": pb.OverlapPolicy.OVERLAP_POLICY_BUFFER_ONE,
    "cancel": pb.OverlapPolicy.OVERLAP_POLICY_CANCEL_OTHER,
}
CATCH_UP = {
    "skip-all": pb.CatchUpPolicy.CATCH_UP_POLICY_SKIP_ALL,
    "earliest": pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_EARLIEST,
    "latest": pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_LATEST,
    "all": pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_ALL,
}


def add(parser: argparse.ArgumentParser, *, update: bool) -> None:
    what = parser.add_argument_group("task")
    what.add_argument("--name", help="1-200 characters" + ("" if update else " (required)"))
    what.add_argument("--description")
    what.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    if update:
        what.add_argument("--remove-label", action="append", default=[], metavar="KEY", help="repeatable")
        what.add_argument("--clear-labels", action="store_true", help="remove every label first")
    when = parser.add_argument_group("schedule (one of --cron, --every or --at)")
    kind = when.add_mutually_exclusive_group()
    kind.add_argument("--cron", metavar="EXPR", help='5 or 6 fields or a macro, e.g. "*/5 * * * *"')
    kind.add_argument(
        "--every",
        metavar="DURATION",
        help="run every 1s-366d (30s, 5m, 1h30m), at --start-time + k x DURATION",
    )
    kind.add_argument("--at", metavar="TIME", help="run once: ISO 8601 with offset, or +DURATION from now")
    when.add_argument("--tz", metavar="ZONE", help="IANA time zone of --cron (default UTC)")
    when.add_argument(
        "--start-time",
        metavar="TIME",
        help="cron: no occurrence before; --every: the first occurrence and the phase (default now)",
    )
    when.add_argument("--end-time", metavar="TIME", help="cron, --every: no occurrence after")
    target = parser.add_argument_group("target (log unless --http-url or --command)")
    which = target.add_mutually_exclusive_group()
    which.add_argument("--http-url", metavar="URL", help="call this URL")
    which.add_argument(
        "--command",
        metavar="PROGRAM",
        help="run this program (no shell) on an executor with EXECUTOR_COMMAND_TARGETS=true",
    )
    which.add_argument("--log", action="store_true", help="log target: record the payload")
    target.add_argument("--method", choices=METHODS, type=str.upper, help="default POST")
    target.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help="repeatable")
    target.add_argument(
        "--secret-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE|@FILE'",
        help="repeatable; write-only: never shown, logged or returned",
    )
    target.add_argument(
        "--signing-secret",
        action="append",
        default=[],
        metavar="whsec_...|@FILE",
        help="sign each request (Standard Webhooks); at most 2 (rotation); write-only"
        + ("; the ones given replace the stored ones" if update else ""),
    )
    if update:
        target.add_argument(
            "--remove-header", action="append", default=[], metavar="NAME", help="plain or secret; repeatable"
        )
        target.add_argument("--remove-signing-secrets", action="store_true", help="stop signing the requests")
    target.add_argument("--body", metavar="TEXT|@FILE")
    target.add_argument("--expected-status", type=int, metavar="CODE", help="default: any 2xx")
    target.add_argument(
        "--arg",
        action="append",
        default=None,
        metavar="ARG",
        help="command: one argument, verbatim; repeatable, in order (--arg=-v for one that starts with -)",
    )
    target.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="command: repeatable")
    target.add_argument(
        "--secret-env",
        action="append",
        default=[],
        metavar="KEY=VALUE|@FILE",
        help="command: repeatable; write-only: never shown, logged or returned",
    )
    target.add_argument("--workdir", metavar="DIR", help="command: working directory (absolute)")
    run = parser.add_argument_group("run")
    run.add_argument("--payload", metavar="JSON|@FILE", help="a JSON object handed to the target")
    run.add_argument("--timeout", metavar="DURATION", help="per attempt, e.g. 30s (default 60s)")
    run.add_argument(
        "--max-jitter",
        metavar="DURATION",
        help="start each occurrence up to this much late, by a delay fixed per task and time (0-1h; 0: none)",
    )
    run.add_argument(
        "--catch-up",
        choices=tuple(CATCH_UP),
        help="occurrences found late (the suite was down): which run (default earliest)",
    )
    run.add_argument(
        "--catch-up-limit", type=int, metavar="N", help="--catch-up all: at most N run (1-100, default 10)"
    )
    run.add_argument(
        "--catch-up-window",
        metavar="DURATION",
        help="only late occurrences at most this old run (0: no window)",
    )
    run.add_argument(
        "--overlap",
        choices=tuple(OVERLAP),
        help="an occurrence due while earlier runs are active: allow (default), skip it, buffer one, "
        "or cancel the oldest",
    )
    run.add_argument(
        "--max-concurrent",
        type=int,
        metavar="N",
        help="runs of the task active at once (1-100; default 1, or no limit with --overlap allow)",
    )
    run.add_argument(
        "--pause-after-failures",
        type=int,
        metavar="N",
        help="pause the task after N executions in a row failed or timed out (0: never)",
    )
    run.add_argument(
        "--export-metrics",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="export this task's own lag and outcome metrics (docs/metrics.md, per-task metrics)",
    )
    run.add_argument("--max-attempts", type=int, metavar="N", help="attempts including the first")
    run.add_argument("--initial-backoff", metavar="DURATION")
    run.add_argument("--max-backoff", metavar="DURATION")
    run.add_argument("--backoff-multiplier", type=float, metavar="X")
    alertflags.add(parser, update=update)


def apply(args: argparse.Namespace, task: pb.Task) -> set[str]:
    """Apply the flags given to `task`; returns the top-level fields changed."""
    changed: set[str] = set()
    if args.name is not None:
        task.name = args.name
        changed.add("name")
    if args.description is not None:
        task.description = args.description
        changed.add("description")
    _labels(args, task, changed)
    _schedule(args, task, changed)
    _target(args, task, changed)
    if args.payload is not None:
        task.payload.CopyFrom(values.struct("--payload", args.payload))
        changed.add("payload")
    if args.timeout is not None:
        task.timeout.CopyFrom(values.duration("--timeout", args.timeout))
        changed.add("timeout")
    if args.max_jitter is not None:
        task.max_jitter.CopyFrom(values.duration("--max-jitter", args.max_jitter))
        changed.add("max_jitter")
    _catch_up(args, task, changed)
    if args.overlap is not None:
        task.overlap.policy = OVERLAP[args.overlap]
        changed.add("overlap")
    if args.pause_after_failures is not None:
        task.pause_after_failures = args.pause_after_failures
        changed.add("pause_after_failures")
    if args.export_metrics is not None:
        task.export_metrics = args.export_metrics
        changed.add("export_metrics")
    if args.max_concurrent is not None:
        task.overlap.max_concurrent = args.max_concurrent
        changed.add("overlap")
    _retry(args, task, changed)
    alertflags.apply(args, task, changed)
    return changed


def _labels(args: argparse.Namespace, task: pb.Task, changed: set[str]) -> None:
    if getattr(args, "clear_labels", False):
        task.labels.clear()
        changed.add("labels")
    for key in getattr(args, "remove_label", []):
        task.labels.pop(key, None)
        changed.add("labels")
    if args.label:
        task.labels.update(values.pairs("--label", args.label))
        changed.add("labels")


def _schedule(args: argparse.Namespace, task: pb.Task, changed: set[str]) -> None:
    if args.at is not None:
        for flag in ("tz", "start_time", "end_time"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} applies to --cron and --every, not --at")
        task.schedule.once.run_time.CopyFrom(values.instant("--at", args.at))
        changed.add("schedule")
        return
    kind = task.schedule.WhichOneof("kind")
    if args.cron is not None:
        zone = task.schedule.cron.time_zone if kind == "cron" else ""
        task.schedule.cron.CopyFrom(pb.CronSchedule(expression=args.cron, time_zone=zone))
        changed.add("schedule")
    if args.every is not None:
        # A new period keeps the stored phase (start time) and end, unless flags below change them.
        kept = task.schedule.interval if kind == "interval" else pb.IntervalSchedule()
        task.schedule.interval.CopyFrom(kept)
        task.schedule.interval.every.CopyFrom(values.duration("--every", args.every))
        changed.add("schedule")
    if args.tz is None and args.start_time is None and args.end_time is None:
        return
    kind = task.schedule.WhichOneof("kind")
    if kind == "interval" and args.tz is not None:
        raise UsageError("--tz applies to --cron: an interval is real time, in no time zone")
    if kind not in ("cron", "interval"):
        raise UsageError("--tz, --start-time and --end-time need a recurring schedule (--cron or --every)")
    bounded = task.schedule.cron if kind == "cron" else task.schedule.interval
    if args.tz is not None:
        task.schedule.cron.time_zone = args.tz
    if args.start_time is not None:
        bounded.start_time.CopyFrom(values.instant("--start-time", args.start_time))
    if args.end_time is not None:
        bounded.end_time.CopyFrom(values.instant("--end-time", args.end_time))
    changed.add("schedule")


def _catch_up(args: argparse.Namespace, task: pb.Task, changed: set[str]) -> None:
    """The flags change only what they name; the policy, limit and window stay as stored."""
    if args.catch_up is not None:
        task.catch_up.policy = CATCH_UP[args.catch_up]
        if args.catch_up != "all":
            task.catch_up.limit = 0
        changed.add("catch_up")
    if args.catch_up_limit is not None:
        task.catch_up.limit = args.catch_up_limit
        changed.add("catch_up")
    if args.catch_up_window is not None:
        task.catch_up.window.CopyFrom(values.duration("--catch-up-window", args.catch_up_window))
        changed.add("catch_up")


def _target(args: argparse.Namespace, task: pb.Task, changed: set[str]) -> None:
    _kind(args, task, changed)
    _command(args, task, changed)
    removed = getattr(args, "remove_header", [])
    unsigned = getattr(args, "remove_signing_secrets", False)
    http_flags = (
        args.method,
        args.header or None,
        args.secret_header or None,
        removed or None,
        args.signing_secret or None,
        unsigned or None,
        args.body,
        args.expected_status,
    )
    if all(flag is None for flag in http_flags):
        return
    if task.target.WhichOneof("kind") != "http":
        raise UsageError(
            "--method, --header, --secret-header, --remove-header, --signing-secret, "
            "--remove-signing-secrets, --body and --expected-status need an http target (--http-url)"
        )
    http = task.target.http
    if args.method is not None:
        http.method = pb.HttpMethod.Value(f"HTTP_METHOD_{args.method}")  # type: ignore[assignment]
    _headers(args, http, removed)
    if unsigned and args.signing_secret:
        raise UsageError("--remove-signing-secrets and --signing-secret: give one or the other")
    if unsigned or args.signing_secret:  # the ones given (none: stop signing) replace the stored ones
        del http.signing_secrets[:]
        given = args.signing_secret
        http.signing_secrets.extend(secret("--signing-secret", s, "a signing secret") for s in given)
    if args.body is not None:
        http.body = values.read_arg("--body", args.body).encode()
    if args.expected_status is not None:
        http.expected_status = args.expected_status
    changed.add("target")


def _kind(args: argparse.Namespace, task: pb.Task, changed: set[str]) -> None:
    """--log, --http-url and --command: the kind of target (kept when it already is that kind)."""
    if args.log:
        task.target.CopyFrom(pb.Target(log=pb.LogTarget()))
        changed.add("target")
    if args.http_url is not None:
        if task.target.WhichOneof("kind") != "http":
            task.target.CopyFrom(pb.Target(http=pb.HttpTarget()))
        task.target.http.url = args.http_url
        changed.add("target")
    if args.command is not None:
        if task.target.WhichOneof("kind") != "command":
            task.target.CopyFrom(pb.Target(command=pb.CommandTarget()))
        task.target.command.program = args.command
        changed.add("target")


def _headers(args: argparse.Namespace, http: pb.HttpTarget, removed: list[str]) -> None:
    """--remove-header first, then --header and --secret-header (a header is either secret or not)."""
    for name in removed:
        found = [k for k in (*http.headers, *http.secret_headers) if k.lower() == name.strip().lower()]
        if not found:
            raise UsageError(f"--remove-header: the task has no header {name!r}")
        for key in found:
            http.headers.pop(key, None)
            http.secret_headers.pop(key, None)
    if args.header:
        for name, value in values.pairs("--header", args.header, sep=":").items():
            _drop(http.secret_headers, name)
            http.headers[name] = value
    if args.secret_header:
        for name, value in values.pairs("--secret-header", args.secret_header, sep=":").items():
            _drop(http.headers, name)
            http.secret_headers[name] = secret("--secret-header", value, f"the value of {name!r}")


def secret(flag: str, value: str, what: str) -> str:
    """A secret flag's value, or the content of the file `@FILE` names (stripped); never empty."""
    secret = values.read_arg(flag, value).strip() if value.startswith("@") else value
    if not secret:
        raise UsageError(f"{flag}: {what} is empty")
    return secret


def _drop(headers: MutableMapping[str, str], name: str) -> None:
    """Remove header `name` (names are case-insensitive)."""
    for key in [k for k in headers if k.lower() == name.lower()]:
        del headers[key]


def _command(args: argparse.Namespace, task: pb.Task, changed: set[str]) -> None:
    if args.arg is None and not args.env and not args.secret_env and args.workdir is None:
        return
    if task.target.WhichOneof("kind") != "command":
        raise UsageError("--arg, --env, --secret-env and --workdir need a command target (--command)")
    command = task.target.command
    if args.arg is not None:  # the arguments given replace the stored ones, in order
        del command.args[:]
        command.args.extend(args.arg)
    for name, value in values.pairs("--env", args.env).items():
        command.secret_env.pop(name, None)  # a variable is either secret or not: this one is not now
        command.env[name] = value
    for name, value in values.pairs("--secret-env", args.secret_env).items():
        command.env.pop(name, None)
        command.secret_env[name] = secret("--secret-env", value, f"the value of {name!r}")
    if args.workdir is not None:
        command.working_dir = args.workdir
    changed.add("target")


def _retry(args: argparse.Namespace, task: pb.Task, changed: set[str]) -> None:
    policy = task.retry_policy
    if args.max_attempts is not None:
        policy.max_attempts = args.max_attempts
    if args.initial_backoff is not None:
        policy.initial_backoff.CopyFrom(values.duration("--initial-backoff", args.initial_backoff))
    if args.max_backoff is not None:
        policy.max_backoff.CopyFrom(values.duration("--max-backoff", args.max_backoff))
    if args.backoff_multiplier is not None:
        policy.backoff_multiplier = args.backoff_multiplier
    given = (args.max_attempts, args.initial_backoff, args.max_backoff, args.backoff_multiplier)
    if any(flag is not None for flag in given):
        changed.add("retry_policy")
