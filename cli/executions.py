"""Execution commands: list, get, cancel, rerun, and follow (poll and print new and changed
executions)."""

from __future__ import annotations

import argparse
import time

from google.protobuf.timestamp_pb2 import Timestamp

from cli import output, values
from cli.client import MAX_PAGE, Client
from schedcore import pb

STATUSES = {output.status_name(v): v for v in pb.ExecutionStatus.values() if v}
HEADERS = ("ID", "TASK", "STATUS", "ATTEMPT", "NOMINAL", "LAG", "DURATION", "MESSAGE")
# follow prints rows as they come, so its columns have fixed widths.
FOLLOW_WIDTHS = (36, 16, 9, 7, 20, 8, 8)


def row(e: pb.Execution, names: dict[str, str] | None = None) -> tuple[str, ...]:
    """A table row; `names`: task names by id, shown in place of the id (which the execution id
    starts with)."""
    return (
        e.id,
        (names or {}).get(e.task_id, e.task_id),
        output.status_name(e.status),
        str(e.attempt),
        output.when(e.nominal_time),
        output.span(e.lag, e.HasField("lag")),
        output.span(e.duration, e.HasField("duration")),
        output.short(e.status_message, 60),
    )


def show(e: pb.Execution, args: argparse.Namespace) -> None:
    if args.output == "json":
        output.print_json(output.to_json(e))
        return
    rows = [
        ("id", e.id),
        ("task", e.task_id),
        ("status", output.status_name(e.status)),
        ("trigger", pb.ExecutionTrigger.Name(e.trigger).removeprefix("EXECUTION_TRIGGER_").lower()),
        *([("rerun of", e.rerun_of)] if e.rerun_of else []),
        ("attempt", str(e.attempt)),
        ("nominal", output.when(e.nominal_time)),
        *([("planned", output.when(e.planned_time))] if e.HasField("planned_time") else []),
        ("fired", output.when(e.fire_time, e.HasField("fire_time"))),
        ("started", output.when(e.start_time, e.HasField("start_time"))),
        *([("cancel asked", output.when(e.cancel_time))] if e.HasField("cancel_time") else []),
        ("finished", output.when(e.finish_time, e.HasField("finish_time"))),
        ("lag", output.span(e.lag, e.HasField("lag"))),
        ("duration", output.span(e.duration, e.HasField("duration"))),
        ("executor", e.executor or "-"),
        *([("trace", e.trace_id)] if e.trace_id else []),  # docs/tracing.md
    ]
    if e.status_message:
        rows.append(("message", e.status_message))
    if e.result.HasField("http"):
        rows.append(("http status", str(e.result.http.status_code)))
    if e.result.output:
        truncated = " (truncated)" if e.result.output_truncated else ""
        rows.append(("output" + truncated, e.result.output))
    output.details(rows)


def _request(args: argparse.Namespace) -> pb.ListExecutionsRequest:
    request = pb.ListExecutionsRequest(
        task_id=args.task or "", namespace=getattr(args, "namespace", None) or ""
    )
    if args.status:
        request.status = STATUSES[args.status]  # type: ignore[assignment]
    if getattr(args, "until", None):
        request.end_time.CopyFrom(values.instant("--until", args.until))
    return request


def _since(text: str) -> Timestamp:
    return values.since("--since", text)


def list_executions(client: Client, args: argparse.Namespace) -> None:
    request = _request(args)
    if args.since:
        request.start_time.CopyFrom(_since(args.since))
    request.page_token = args.page_token or ""
    found, more = client.pages(
        client.stub.ListExecutions, request, "executions", None if args.all else args.limit
    )
    names = client.task_names(e.task_id for e in found) if args.output != "json" else {}
    output.listing(args.output, "executions", found, more, HEADERS, [row(e, names) for e in found])


def get(client: Client, args: argparse.Namespace) -> None:
    show(client.call(client.stub.GetExecution, pb.GetExecutionRequest(id=args.id)).execution, args)


def cancel(client: Client, args: argparse.Namespace) -> None:
    request = pb.CancelExecutionRequest(id=args.id, reason=args.reason or "")
    show(client.call(client.stub.CancelExecution, request).execution, args)


def rerun(client: Client, args: argparse.Namespace) -> None:
    show(client.call(client.stub.RerunExecution, pb.RerunExecutionRequest(id=args.id)).execution, args)


def follow(client: Client, args: argparse.Namespace) -> None:
    """Print executions (of a task, or all) whose nominal time is within --since, then every one
    that appears or changes, polling ListExecutions every --interval seconds, until Ctrl-C.

    The window starts --since before the command started, and reaches further back while an
    execution seen in it has not ended (its retries keep its nominal time)."""
    seen: dict[str, tuple[int, int, str, int]] = {}  # id: status, attempt, message, nominal ms
    window_ms = _since(args.since).ToMilliseconds()
    table = args.output != "json"
    if table:
        print(output.fixed(HEADERS, FOLLOW_WIDTHS), flush=True)
    while True:
        request = _request(args)
        unfinished = [v[3] for v in seen.values() if v[0] not in pb.TERMINAL_STATUSES]
        request.start_time.FromMilliseconds(min([window_ms, *unfinished]))
        changed = []
        for e in _all_pages(client, request):
            state = (int(e.status), e.attempt, e.status_message, e.nominal_time.ToMilliseconds())
            if seen.get(e.id) != state:
                seen[e.id] = state
                changed.append(e)
        for e in sorted(changed, key=lambda x: (x.nominal_time.ToMilliseconds(), x.id)):
            if table:
                print(output.fixed(row(e), FOLLOW_WIDTHS), flush=True)
            else:
                output.print_json(output.to_json(e), lines=True)
        time.sleep(args.interval)


def _all_pages(client: Client, request: pb.ListExecutionsRequest) -> list[pb.Execution]:
    found: list[pb.Execution] = []
    request.page_size = MAX_PAGE  # one page per poll, the largest
    while True:
        page = client.call(client.stub.ListExecutions, request)
        found += page.executions
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("executions", parents=[common], help="list, show, cancel, rerun and follow executions")
    subs = p.add_subparsers(
        dest="executions_command", metavar="{list,get,cancel,rerun,follow}", required=True
    )

    q = subs.add_parser("list", parents=[common], help="list executions, newest first")
    q.add_argument("--task", metavar="ID", help="only this task's")
    q.add_argument("--namespace", help="only executions of tasks in this namespace")
    q.add_argument("--status", choices=sorted(STATUSES))
    q.add_argument(
        "--since", metavar="TIME", help="nominal time at or after: ISO 8601, or a duration back (10m)"
    )
    q.add_argument("--until", metavar="TIME", help="nominal time before (ISO 8601)")
    q.add_argument("--limit", type=values.positive_int, default=50, help="at most this many (default 50)")
    q.add_argument("--all", action="store_true", help="every page")
    q.add_argument("--page-token", help="continue a listing")
    q.set_defaults(func=list_executions)

    q = subs.add_parser("get", parents=[common], help="show an execution and its output")
    q.add_argument("id")
    q.set_defaults(func=get)

    q = subs.add_parser(
        "cancel",
        parents=[common],
        help="cancel a pending execution, or stop a running one (it ends CANCELLED once stopped)",
    )
    q.add_argument("id")
    q.add_argument("--reason", help="recorded in its status message")
    q.set_defaults(func=cancel)

    q = subs.add_parser(
        "rerun",
        parents=[common],
        help="run an execution's occurrence again: a new execution (trigger RERUN), the original kept",
    )
    q.add_argument("id")
    q.set_defaults(func=rerun)

    q = subs.add_parser("follow", parents=[common], help="print new and changed executions until Ctrl-C")
    q.add_argument("--task", metavar="ID", help="only this task's")
    q.add_argument("--status", choices=sorted(STATUSES))
    q.add_argument(
        "--since", default="5m", metavar="TIME", help="show those from this far back first (default 5m)"
    )
    q.add_argument(
        "--interval",
        type=values.positive_float,
        default=1.0,
        metavar="SECONDS",
        help="poll period (default 1)",
    )
    q.set_defaults(func=follow)
