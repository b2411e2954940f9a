"""The stats command: tasks by state, executions ended in a window by status, lag percentiles,
and the work pending or running now (GetStats)."""

from __future__ import annotations

import argparse

from cli import output, values
from cli.client import Client
from schedcore import pb


def stats(client: Client, args: argparse.Namespace) -> None:
    request = pb.GetStatsRequest(window=values.duration("--window", args.window))
    reply = client.call(client.stub.GetStats, request)
    if args.output == "json":
        output.print_json(output.to_json(reply))
        return
    lag = reply.lag
    output.details(
        [
            ("window", f"{output.when(reply.start_time)} - {output.when(reply.end_time)}"),
            ("tasks", ", ".join(f"{output.state_name(c.state)} {c.count}" for c in reply.tasks) or "-"),
            (
                "executions",
                ", ".join(f"{output.status_name(c.status)} {c.count}" for c in reply.executions) or "-",
            ),
            ("pending now", str(reply.pending_executions)),
            ("running now", str(reply.running_executions)),
            ("task quotas", ", ".join(_usage(u) for u in reply.namespaces) or "-"),
            (
                "lag",
                f"{lag.count} measured, p50 {output.span(lag.p50)}, p95 {output.span(lag.p95)}, "
                f"p99 {output.span(lag.p99)}"
                if lag.count
                else "-",
            ),
        ]
    )


def _usage(usage: pb.NamespaceUsage) -> str:
    """`ns 2/100000 tasks 1234/268435456 bytes 0/600 runs`: usage against each limit (runs: this
    minute's RunTask calls)."""
    return (
        f"{usage.namespace} {usage.tasks}/{usage.max_tasks or 'unlimited'} tasks "
        f"{usage.task_bytes}/{usage.max_task_bytes or 'unlimited'} bytes "
        f"{usage.runs_this_minute}/{usage.max_runs_per_minute or 'unlimited'} runs"
    )


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("stats", parents=[common], help="tasks by state, recent executions and lag")
    p.add_argument("--window", default="1h", metavar="DURATION", help="whole minutes, up to 24h (default 1h)")
    p.set_defaults(func=stats)
