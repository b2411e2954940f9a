"""Domain errors, and their one mapping to gRPC status codes.

Code below the servicers raises these; the server interceptor (schedcore.interceptors) turns them
into statuses. Servicers never set a status by hand. Redis connection failures map to
UNAVAILABLE; anything unexpected maps to INTERNAL with a generic message and a logged traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


class SchedulerError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(SchedulerError, ValueError):
    """The request is malformed; `violations` names each offending field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation] | FieldViolation) -> None:
        self.violations = violations if isinstance(violations, list) else [violations]
        super().__init__("; ".join(str(v) for v in self.violations))

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls(FieldViolation(field, description))


class NotFound(SchedulerError, LookupError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SchedulerError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(SchedulerError):
    """A concurrent change won (stale etag)."""

    code = grpc.StatusCode.ABORTED


class FailedPrecondition(SchedulerError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(SchedulerError):
    """The call carries no valid credentials (missing, unknown, revoked or expired token)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(SchedulerError, PermissionError):
    """The caller is known but may not do this (role too low, another namespace)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(SchedulerError):
    """A quota or limit is used up (a namespace's tasks, a token's request rate, this replica's
    concurrent calls); the message names which and its limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(SchedulerError):
    code = grpc.StatusCode.UNAVAILABLE


# Failures of the store that a retry may cure (schedcore.redisconn.REDIS_UNAVAILABLE), by name:
# the executor uses this module and must never load redis.
_REDIS_UNAVAILABLE_NAMES = (
    "ConnectionError",
    "TimeoutError",
    "BusyLoadingError",
    "TryAgainError",
    "ReadOnlyError",
    "MasterDownError",
)


def redis_unavailable_errors() -> tuple[type[BaseException], ...]:
    """Those failures' classes; none when redis was never imported (nothing could raise them)."""
    module = sys.modules.get("redis.exceptions")
    return tuple(getattr(module, name) for name in _REDIS_UNAVAILABLE_NAMES) if module else ()


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message a client sees for an exception."""
    if isinstance(exc, SchedulerError):
        return exc.code, str(exc)
    if isinstance(exc, redis_unavailable_errors()):
        return grpc.StatusCode.UNAVAILABLE, "the task store is unavailable; retry later"
    return grpc.StatusCode.INTERNAL, "internal error"


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """Client side: the (field, description) pairs of the google.rpc.BadRequest detail that the
    api attaches to INVALID_ARGUMENT (schedcore/interceptors.py), or [] when there is none."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # the trailer does not match the status: ignore the details
        return []
    found: list[tuple[str, str]] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found += [(v.field, v.description) for v in bad_request.field_violations]
    return found
