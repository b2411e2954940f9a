"""The partitions command: `partitions migrate --to P2` changes PARTITIONS offline, straight on
Redis (docs/partitions.md, "Changing P (offline)"). It reads the services' own Redis settings
(REDIS_URL or REDIS_CLUSTER_NODES, credentials, REDIS_KEY_PREFIX); the api flags do not apply."""

from __future__ import annotations

import argparse
import asyncio
import sys

from cli import output
from cli.client import Client
from cli.errors import LocalFailure, UsageError
from schedcore.errors import StoreUnavailable
from schedcore.redisconn import connect
from schedcore.settings import Settings, SettingsError
from schedcore.store.keys import MAX_PARTITIONS
from schedcore.store.migrate import Migration, MigrationError, Report


def migrate(_: Client, args: argparse.Namespace) -> None:
    try:
        settings = Settings.from_env(service="scheduler", serves=False)
    except SettingsError as exc:
        raise UsageError(str(exc)) from exc
    try:
        report = asyncio.run(_migrate(settings, args.to, args.dry_run))
    except (MigrationError, StoreUnavailable) as exc:
        raise LocalFailure(str(exc)) from exc
    if args.output == "json":
        output.print_json(
            {
                "from": report.source,
                "to": report.target,
                "dryRun": args.dry_run,
                "tasks": report.tasks,
                "executions": report.executions,
                "requestIds": report.request_ids,
                "notifications": report.notifications,
                "merged": report.merged,
            }
        )
        return
    verb = "would move" if args.dry_run else "moved"
    output.details(
        [
            ("partitions", f"{report.source} -> {report.target}"),
            (f"tasks {verb}", f"{report.tasks:,}"),
            (f"executions {verb}", f"{report.executions:,}"),
            (f"request ids {verb}", f"{report.request_ids:,}"),
            (f"notifications {verb}", f"{report.notifications:,}"),
            ("merged", ", ".join(report.merged) or "-"),
        ]
    )


async def _migrate(settings: Settings, target: int, dry_run: bool) -> Report:
    client = connect(settings)
    try:
        migration = Migration(
            client, settings.redis_key_prefix, target, lambda text: print(text, file=sys.stderr)
        )
        return await migration.run(dry_run)
    finally:
        await client.aclose()


def _count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 1 <= count <= MAX_PARTITIONS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_PARTITIONS}, got {count}")
    return count


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("partitions", parents=[common], help="change PARTITIONS offline (on Redis itself)")
    subs = p.add_subparsers(dest="partitions_command", metavar="COMMAND", required=True)
    q = subs.add_parser(
        "migrate",
        parents=[common],
        help="move every task to its partition under a new count; every service must be stopped",
        description=(
            "Move the data to --to partitions, then record that count: set PARTITIONS to it and "
            "start the services again. Reads REDIS_URL / REDIS_CLUSTER_NODES and REDIS_KEY_PREFIX "
            "as the services do. Safe to run again after an interruption (it resumes)."
        ),
    )
    q.add_argument(
        "--to", required=True, type=_count, metavar="P2", help=f"the new PARTITIONS (1-{MAX_PARTITIONS})"
    )
    q.add_argument("--dry-run", action="store_true", help="count what would move; change nothing")
    q.set_defaults(func=migrate)
