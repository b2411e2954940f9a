"""Domain errors, and their one mapping to gRPC status codes.

Code below the servicers raises these; the server interceptor (schedcore.interceptors) turns them
into statuses (`status_of`). Servicers never set a status by hand. The store's failures that a
retry may cure arrive as StoreUnavailable (UNAVAILABLE); anything unexpected maps to INTERNAL
with a generic message and a logged traceback.

A status is bounded whatever the request held (docs/api.md, "Errors"): an error quotes at most
MAX_QUOTE characters of a bad value (`quote`), lists at most MAX_VIOLATIONS field violations and
counts the rest ("and N more"), and its message plus details stay within MAX_STATUS_BYTES as sent.
gRPC clients refuse trailers past 8-16 KiB by default and then report RESOURCE_EXHAUSTED instead
of the error.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

# Characters of a client's value an error message quotes.
MAX_QUOTE = 64
# Field violations one INVALID_ARGUMENT lists (message and BadRequest detail).
MAX_VIOLATIONS = 10
# Characters of one violation's field path and of its description.
MAX_FIELD = 128
MAX_DESCRIPTION = 256
# Characters of a status message.
MAX_MESSAGE = 1024
# Bytes of grpc-message (percent-encoded) plus grpc-status-details-bin (base64) as sent; with the
# header names and grpc-status the trailers stay under 4 KiB.
MAX_STATUS_BYTES = 3584


def clip(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters and marked "..." when it was longer."""
    return text if len(text) <= limit else text[:limit] + "..."


def quote(value: str, limit: int = MAX_QUOTE) -> str:
    """How an error message shows a client's value: quoted, at most `limit` characters of it."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."


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
        super().__init__(_listing(_clipped(self.violations[:MAX_VIOLATIONS]), len(self.violations)))

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls(FieldViolation(field, description))


@dataclass
class Violations:
    """Every problem of one request, collected so a form can show all its mistakes at once."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, path: str, description: str) -> None:
        self.items.append(FieldViolation(path, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


class NotFound(SchedulerError, LookupError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SchedulerError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(SchedulerError):
    """A concurrent change won (stale etag)."""

    code = grpc.StatusCode.ABORTED


class IdTaken(SchedulerError, FileExistsError):
    """A generated id (its args[0], or the index of a batch's item) is in use already: the caller
    picks another (services.api.ids.with_fresh_id); one that escapes asks the client to retry."""

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


class Unimplemented(SchedulerError):
    """An RPC of the contract this version does not serve yet; the message says what brings it."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Unavailable(SchedulerError):
    code = grpc.StatusCode.UNAVAILABLE


class StoreUnavailable(Unavailable):
    """The task store cannot serve now (Redis unreachable, timing out, loading, read-only after a
    failover); a retry may cure it. schedcore.redisconn's client raises it for every such Redis
    failure, from that failure: `reason` names it (for logs; never sent to clients)."""

    def __init__(self, reason: str = "") -> None:
        super().__init__("the task store is unavailable; retry later")
        self.reason = reason


class NotReplicated(StoreUnavailable):
    """REDIS_WAIT_REPLICAS: a write its primary applied was acknowledged by fewer replicas than
    asked within the wait (docs/partitions.md, "Acknowledged writes"). UNAVAILABLE: the write may
    stand, and a retry with the same request id does not repeat a create."""

    def __init__(self, acknowledged: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(f"WAIT {wanted} {timeout_ms}: {acknowledged} replicas acknowledged")
        self.args = (
            f"the write was acknowledged by {acknowledged} of the {wanted} replicas "
            f"REDIS_WAIT_REPLICAS asks for within {timeout_ms} ms; it may have been applied: "
            f"retry (with the same request_id a create is not repeated)",
        )


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message a client sees for an exception."""
    if isinstance(exc, SchedulerError):
        return exc.code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error"


def status_of(exc: BaseException) -> status_pb2.Status:
    """The google.rpc.Status a client gets for an exception, within the bounds above; an
    InvalidArgument carries a BadRequest detail with (the first of) its field violations."""
    code, message = status_for(exc)
    violations = exc.violations if isinstance(exc, InvalidArgument) else []
    listed = _clipped(violations[:MAX_VIOLATIONS])
    limit = MAX_MESSAGE
    while True:
        text = _listing(listed, len(violations), limit) if violations else clip(message, limit)
        status = status_pb2.Status(code=getattr(code_pb2, code.name), message=text)
        if listed:
            status.details.add().Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in listed
                    ]
                )
            )
        if _wire_bytes(status) <= MAX_STATUS_BYTES:
            return status
        # Drop violations from the end, keeping the first (it names a field); then shorten.
        if len(listed) > 1:
            listed.pop()
        else:
            limit //= 2
            listed = [FieldViolation(clip(v.field, limit), clip(v.description, limit)) for v in listed]


def _clipped(violations: list[FieldViolation]) -> list[FieldViolation]:
    return [
        FieldViolation(clip(v.field, MAX_FIELD), clip(v.description, MAX_DESCRIPTION)) for v in violations
    ]


def _listing(listed: list[FieldViolation], total: int, limit: int = MAX_MESSAGE) -> str:
    """The message of an INVALID_ARGUMENT: its listed violations, and how many are left out."""
    more = total - len(listed)
    return clip("; ".join(str(v) for v in listed), limit) + (f"; and {more} more" if more else "")


def _wire_bytes(status: status_pb2.Status) -> int:
    """What grpc-message and grpc-status-details-bin cost in the trailers: the message is
    percent-encoded (every byte outside printable ASCII, and "%", takes three), the serialized
    status base64-encoded."""
    message = sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in status.message.encode())
    return message + len(base64.b64encode(status.SerializeToString()))


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
