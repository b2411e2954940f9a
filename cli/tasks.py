"""Task commands: create, list, get, update, pause, resume, run, delete."""

from __future__ import annotations

import argparse
import shlex

from google.protobuf.field_mask_pb2 import FieldMask

from cli import alertflags, executions, output, taskflags, values
from cli.client import Client
from cli.errors import UsageError
from schedcore import pb

STATES = {"active": pb.TaskState.TASK_STATE_ACTIVE, "paused": pb.TaskState.TASK_STATE_PAUSED,
          "completed": pb.TaskState.TASK_STATE_COMPLETED}  # fmt: skip
ORDERS = {"name": pb.TaskOrder.TASK_ORDER_NAME, "next-run": pb.TaskOrder.TASK_ORDER_NEXT_RUN_TIME}


def show(task: pb.Task, args: argparse.Namespace) -> None:
    if args.output == "json":
        output.print_json(output.to_json(task))
        return
    rows = [
        ("id", task.id),
        ("name", task.name),
        ("namespace", task.namespace or "default"),
        ("state", output.state_name(task.state)),
        ("schedule", output.schedule_text(task.schedule)),
        ("next run", output.when(task.next_run_time, task.HasField("next_run_time"))),
        ("target", output.target_text(task.target)),
        *_target_rows(task.target),
    ]
    if task.description:
        rows.append(("description", task.description))
    if task.labels:
        rows.append(("labels", ", ".join(f"{k}={v}" for k, v in sorted(task.labels.items()))))
    if task.HasField("payload"):
        rows.append(("payload", output.short(output.json_text(task.payload), 100)))
    timeout = output.span(task.timeout) if task.HasField("timeout") else "60s (default)"
    rows.append(("timeout", timeout))
    if task.max_jitter.ToMilliseconds():
        rows.append(("max jitter", output.span(task.max_jitter)))
    rows.append(("catch-up", output.catch_up_text(task.catch_up)))
    rows.append(("overlap", output.overlap_text(task.overlap)))
    if task.pause_after_failures:
        rows.append(("pause after", f"{task.pause_after_failures} failures in a row"))
    if task.export_metrics:
        rows.append(("metrics", "exported per task"))
    if task.pause_reason:
        rows.append(("paused because", task.pause_reason))
    if task.HasField("alerts"):
        rows.append(("alerts", alertflags.text(task.alerts)))
    policy = task.retry_policy
    rows.append(("max attempts", str(policy.max_attempts or 1)))
    if task.HasField("last_execution"):
        last = task.last_execution
        rows.append(("last execution", f"{last.execution_id} {output.status_name(last.status)}"))
    rows += [
        ("created", output.when(task.create_time)),
        ("updated", output.when(task.update_time)),
        ("etag", task.etag),
    ]
    output.details(rows)


def _target_rows(target: pb.Target) -> list[tuple[str, str]]:
    """The target's details below its one-line summary."""
    rows: list[tuple[str, str]] = []
    if target.WhichOneof("kind") == "http":
        http = target.http
        rows += [(f"  header {k}", v) for k, v in sorted(http.headers.items())]
        rows += [(f"  header {k}", "(secret)") for k in sorted(http.secret_headers)]
        rows += [("  signing secret", "(secret)") for _ in http.signing_secrets]
        if http.body:
            rows.append(("  body", output.short(http.body.decode(errors="replace"), 100)))
        if http.expected_status:
            rows.append(("  expected status", str(http.expected_status)))
    if target.WhichOneof("kind") == "command":
        command = target.command
        if command.args:
            rows.append(("  args", " ".join(shlex.quote(a) for a in command.args)))
        rows += [(f"  env {k}", v) for k, v in sorted(command.env.items())]
        rows += [(f"  env {k}", "(secret)") for k in sorted(command.secret_env)]
        if command.working_dir:
            rows.append(("  working dir", command.working_dir))
    return rows


def create(client: Client, args: argparse.Namespace) -> None:
    task = pb.Task()
    if args.from_file is not None:
        values.message_from_json("--from-file", args.from_file, task)
    taskflags.apply(args, task)
    if args.namespace:
        task.namespace = args.namespace
    if not task.HasField("target"):
        task.target.log.SetInParent()
    if args.name is None and not task.name:  # an empty --name is the api's to refuse
        raise UsageError("--name is required (or a name in --from-file)")
    if not task.HasField("schedule"):
        raise UsageError(
            "a schedule is required: --cron EXPR, --every DURATION or --at TIME (or one in --from-file)"
        )
    request = pb.CreateTaskRequest(task=task, request_id=args.request_id or "")
    show(client.call(client.stub.CreateTask, request).task, args)


def list_tasks(client: Client, args: argparse.Namespace) -> None:
    request = pb.ListTasksRequest(
        state=STATES.get(args.state, 0) if args.state else 0,  # type: ignore[arg-type]
        labels=values.pairs("--label", args.label),
        name_contains=args.name_contains or "",
        order_by=ORDERS[args.order],
        namespace=args.namespace or "",
        page_token=args.page_token or "",
    )
    tasks, more = client.pages(client.stub.ListTasks, request, "tasks", None if args.all else args.limit)
    rows = [
        (
            t.id,
            output.short(t.name, 40),
            output.state_name(t.state),
            output.short(output.schedule_text(t.schedule), 40),
            output.short(output.target_text(t.target), 40),
            output.when(t.next_run_time, t.HasField("next_run_time")),
            output.status_name(t.last_execution.status) if t.HasField("last_execution") else "-",
        )
        for t in tasks
    ]
    headers = ("ID", "NAME", "STATE", "SCHEDULE", "TARGET", "NEXT RUN", "LAST")
    output.listing(args.output, "tasks", tasks, more, headers, rows)


def get(client: Client, args: argparse.Namespace) -> None:
    show(client.call(client.stub.GetTask, pb.GetTaskRequest(id=args.id)).task, args)


def update(client: Client, args: argparse.Namespace) -> None:
    """Read the task, apply the flags, write back the fields they touched. The etag read (or the
    one given) makes the write fail with ABORTED if the task changed meanwhile."""
    task = client.call(client.stub.GetTask, pb.GetTaskRequest(id=args.id)).task
    changed = taskflags.apply(args, task)
    if not changed:
        raise UsageError("nothing to update: give at least one field flag (see --help)")
    if args.etag:
        task.etag = args.etag
    request = pb.UpdateTaskRequest(task=task, update_mask=FieldMask(paths=sorted(changed)))
    show(client.call(client.stub.UpdateTask, request).task, args)


def pause(client: Client, args: argparse.Namespace) -> None:
    request = pb.PauseTaskRequest(id=args.id, etag=args.etag or "")
    show(client.call(client.stub.PauseTask, request).task, args)


def resume(client: Client, args: argparse.Namespace) -> None:
    request = pb.ResumeTaskRequest(id=args.id, etag=args.etag or "")
    show(client.call(client.stub.ResumeTask, request).task, args)


def run(client: Client, args: argparse.Namespace) -> None:
    execution = client.call(client.stub.RunTask, pb.RunTaskRequest(id=args.id)).execution
    executions.show(execution, args)


def backfill(client: Client, args: argparse.Namespace) -> None:
    request = pb.BackfillTaskRequest(
        id=args.id,
        start_time=values.instant("--from", args.start),
        end_time=values.instant("--to", args.end),
        dry_run=args.dry_run,
    )
    if args.overlap is not None:
        request.overlap.policy = taskflags.OVERLAP[args.overlap]
    reply = client.call(client.stub.BackfillTask, request)
    if args.output == "json":
        output.print_json(output.to_json(reply))
        return
    verb = "would create" if args.dry_run else "created"
    count = reply.occurrences - reply.existing if args.dry_run else reply.created
    skipped = f" ({reply.skipped} of them SKIPPED by the overlap rule)" if reply.skipped else ""
    print(f"{reply.occurrences} occurrences, {reply.existing} with a record already, {verb} {count}{skipped}")


def delete(client: Client, args: argparse.Namespace) -> None:
    client.call(client.stub.DeleteTask, pb.DeleteTaskRequest(id=args.id, etag=args.etag or ""))
    if args.output == "json":
        output.print_json({"id": args.id, "deleted": True})
    else:
        print(f"deleted {args.id}")


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("create", parents=[common], help="create a task")
    p.add_argument("--from-file", metavar="FILE", help="a Task in protobuf JSON ('-': stdin); flags override")
    p.add_argument("--request-id", help="makes a retried create return the first one's task")
    p.add_argument("--namespace", help="the task's namespace (default: the token's, or default)")
    taskflags.add(p, update=False)
    p.set_defaults(func=create)

    p = sub.add_parser("list", parents=[common], help="list tasks")
    p.add_argument("--state", choices=sorted(STATES))
    p.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="repeatable; all must match"
    )
    p.add_argument("--name-contains", metavar="TEXT", help="case-insensitive")
    p.add_argument("--namespace", help="only tasks in this namespace")
    p.add_argument("--order", choices=sorted(ORDERS), default="name")
    p.add_argument("--limit", type=values.positive_int, default=50, help="at most this many (default 50)")
    p.add_argument("--all", action="store_true", help="every page")
    p.add_argument("--page-token", help="continue a listing")
    p.set_defaults(func=list_tasks)

    p = sub.add_parser("get", parents=[common], help="show a task")
    p.add_argument("id")
    p.set_defaults(func=get)

    p = sub.add_parser("update", parents=[common], help="change a task's fields")
    p.add_argument("id")
    p.add_argument(
        "--etag", help="fail with ABORTED if the task changed since this etag (default: the one read)"
    )
    taskflags.add(p, update=True)
    p.set_defaults(func=update)

    for name, func, text in (
        ("pause", pause, "stop a task firing"),
        ("resume", resume, "resume a paused task"),
        ("delete", delete, "delete a task (its history stays)"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("id")
        p.add_argument("--etag", help="fail with ABORTED if the task changed since this etag")
        p.set_defaults(func=func)

    p = sub.add_parser("run", parents=[common], help="run a task now, outside its schedule")
    p.add_argument("id")
    p.set_defaults(func=run)
    p = sub.add_parser(
        "backfill", parents=[common], help="create the executions a past range of the schedule lacks"
    )
    p.add_argument("id")
    p.add_argument("--from", dest="start", required=True, metavar="TIME", help="first instant (inclusive)")
    p.add_argument("--to", dest="end", required=True, metavar="TIME", help="end (exclusive), not after now")
    p.add_argument("--dry-run", action="store_true", help="count what would be created; create nothing")
    p.add_argument(
        "--overlap",
        choices=tuple(taskflags.OVERLAP),
        help="the overlap rule the runs are decided by, oldest first (default: the task's)",
    )
    p.set_defaults(func=backfill)
