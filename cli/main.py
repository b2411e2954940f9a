"""schedctl's command line: global flags, subcommands, and how failures become exit codes.

Exit codes (docs/cli.md): 0 success; 1 a local failure; 2 a usage error; 10 + the gRPC status
code when the api refuses or cannot be reached (13 INVALID_ARGUMENT, 15 NOT_FOUND, 24
UNAVAILABLE, ...); 130 interrupted (except `executions follow`, which Ctrl-C ends with 0).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc

from cli import access, alerts, errors, executions, partitions, stats, tasks, values
from cli.client import DEFAULT_TIMEOUT_S, Client, default_api, default_token, security
from cli.errors import LocalFailure, UsageError
from schedcore.settings import SettingsError

DESCRIPTION = """Operate the scheduler: create, list, change and run tasks; read and follow their
executions; manage API tokens and read the audit trail; manage alert channels and read a task's
notifications; change PARTITIONS offline (`partitions migrate`, on Redis itself). The api address
comes from --api or API_ADDR (default localhost:50051); a token from --token or SCHEDCTL_TOKEN is sent as
`authorization: Bearer <token>`. The connection is TLS (--tls-ca to trust a private CA),
plaintext only with --plaintext."""


def _global_flags(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The same flags before or after the subcommand; after it they override (SUPPRESS keeps a
    subcommand from resetting what was given before it)."""

    def d(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("connection and output")
    group.add_argument("--api", default=d(None), metavar="HOST:PORT", help="api address (env API_ADDR)")
    group.add_argument("--token", default=d(None), help="bearer token (env SCHEDCTL_TOKEN; prefer the env)")
    group.add_argument(
        "--tls-ca",
        default=d(None),
        metavar="PEM",
        help="CA that signs the api's certificate (env SCHEDCTL_TLS_CA)",
    )
    group.add_argument(
        "--tls-cert", default=d(None), metavar="PEM", help="client certificate (env SCHEDCTL_TLS_CERT)"
    )
    group.add_argument("--tls-key", default=d(None), metavar="PEM", help="its key (env SCHEDCTL_TLS_KEY)")
    group.add_argument(
        "--plaintext",
        action="store_true",
        default=d(None),
        help="no TLS, for a local api started with GRPC_PLAINTEXT=true (env SCHEDCTL_PLAINTEXT=true)",
    )
    group.add_argument(
        "--rpc-timeout",
        type=values.positive_float,
        default=d(DEFAULT_TIMEOUT_S),
        metavar="SECONDS",
        help="deadline per call",
    )
    group.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=d("table"),
        help="table for people, json for scripts",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="schedctl", description=DESCRIPTION)
    _global_flags(top, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_flags(common, defaults=False)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    tasks.add_parsers(sub, common)
    executions.add_parsers(sub, common)
    stats.add_parsers(sub, common)
    access.add_parsers(sub, common)
    alerts.add_parsers(sub, common)
    partitions.add_parsers(sub, common)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        tls = security(args.plaintext, args.tls_ca, args.tls_cert, args.tls_key)
        tls.check()
    except SettingsError as exc:
        p.exit(errors.USAGE, f"{p.prog}: error: {exc}\n")
    client = Client(args.api or default_api(), args.token or default_token(), args.rpc_timeout, tls)
    try:
        args.func(client, args)
    except UsageError as exc:
        p.exit(errors.USAGE, f"{p.prog}: error: {exc}\n")
    except grpc.RpcError as exc:
        return errors.report(exc)
    except LocalFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return errors.FAILURE
    except KeyboardInterrupt:
        if args.func is executions.follow:
            return errors.OK
        return errors.INTERRUPTED
    except BrokenPipeError:  # `schedctl list | head`: the reader left
        sys.stderr.close()
        return errors.FAILURE
    finally:
        client.close()
    return errors.OK


def run() -> None:
    """The `schedctl` console script."""
    sys.exit(main())
