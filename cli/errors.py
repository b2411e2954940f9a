"""Exit codes and error messages: a failed call exits with 10 + its gRPC status code and prints
`error: <STATUS>: <details>`, then one line per field violation (google.rpc.BadRequest)."""

from __future__ import annotations

import sys

import grpc

from schedcore.errors import field_violations

OK = 0
# A local failure: output that cannot be written (a file that cannot be read is a usage error),
# or a `partitions migrate` that Redis refused or could not run (LocalFailure).
FAILURE = 1
# The command line is wrong (argparse's own code for usage errors).
USAGE = 2
# A call failed: this plus its gRPC status code (NOT_FOUND 5 -> 15, UNAVAILABLE 14 -> 24).
STATUS_BASE = 10
# Interrupted by Ctrl-C (128 + SIGINT), except `executions follow`, which Ctrl-C ends normally.
INTERRUPTED = 130


class UsageError(Exception):
    """A flag's value the CLI cannot use: exit 2 with the message."""


class LocalFailure(Exception):
    """A command that failed on this side of the api (schedctl partitions on Redis): exit 1
    with the message."""


def exit_code(code: grpc.StatusCode) -> int:
    value: int = code.value[0]
    return OK if value == 0 else STATUS_BASE + value


violations = field_violations


def report(error: grpc.RpcError) -> int:
    """Print a failed call to stderr; returns the exit code."""
    code: grpc.StatusCode = error.code()
    details: str = error.details() or ""
    print(f"error: {code.name}: {details}", file=sys.stderr)
    for field, description in violations(error):
        print(f"  {field}: {description}", file=sys.stderr)
    return exit_code(code)
