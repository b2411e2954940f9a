"""Scenario 8: bad input against the live api processes. Arbitrary values for every field of
every request (strings with odd unicode, any numbers, deep nesting), oversized messages, broken
page tokens, and raw garbage on the gRPC port: only documented status codes come back (never
UNKNOWN or INTERNAL), a rejected call leaves Redis exactly as it was, and the service stays
SERVING."""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from typing import Any

import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedcore import pb
from tests.faults.checker import Figures
from tests.faults.cluster import SERVING, Cluster, cluster
from tests.faults.conftest import Recorder
from tests.faults.scale import current
from tests.faults.scenario import TIMEOUT
from tests.integration.helpers import snapshot

pytestmark = TIMEOUT
SCALE = current()
# docs/api.md, "Errors" (RESOURCE_EXHAUSTED: a message over the server's 8 MiB limit).
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
F = descriptor.FieldDescriptor
# Unicode a validator must survive: controls, NUL, bidi overrides, zero-width joiners,
# combining marks, astral emoji, private use, noncharacters.
ODD = (
    "\x00\x07\t\n\r\x1b\x7f\u0085\u00a0\u200b\u200d\u202e\u2028\u2029"
    "\ufeff\ufffd\U0001f600\U000e0001\ue000\ufdd0\u0301"
)
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.text(st.sampled_from(ODD), max_size=20),
    st.sampled_from(["", " ", "* * * * *", "*/0 * * * *", "Europe/Berlin", "../../etc", "a" * 3000]),
)
INT32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, -1, 1, 50, 1000, 1001, 2**31 - 1]))
INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-(10**12), 10**13))
JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=30,
)


def deep(depth: int) -> Struct:
    """A Struct nested `depth` times (built in place: Struct.update recurses in Python)."""
    top = Struct()
    current = top
    for _ in range(depth):
        current = current.fields["k"].struct_value
    current.fields["leaf"].string_value = "x"
    return top


@st.composite
def message(draw: st.DrawFn, cls: type[Message], ids: list[str], depth: int = 0) -> Message:
    """A message of `cls` with arbitrary values in an arbitrary subset of its fields."""
    msg = cls()
    name = msg.DESCRIPTOR.full_name
    if name == "google.protobuf.Struct":
        depth = draw(st.sampled_from([0, 0, 0, 5, 25]))
        if depth:
            msg.CopyFrom(deep(depth))
        else:
            msg.update(draw(st.dictionaries(TEXT, JSON, max_size=5)))  # type: ignore[attr-defined]
        return msg
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        msg.seconds = draw(INT64)  # type: ignore[attr-defined]
        msg.nanos = draw(INT32)  # type: ignore[attr-defined]
        return msg
    if name == "google.protobuf.FieldMask":
        paths = st.one_of(TEXT, st.sampled_from(["name", "schedule", "target", "payload", "task.name", "*"]))
        msg.paths.extend(draw(st.lists(paths, max_size=4)))  # type: ignore[attr-defined]
        return msg
    for field in msg.DESCRIPTOR.fields:
        if draw(st.booleans()):
            assign(draw, msg, field, ids, depth)
    return msg


def assign(
    draw: st.DrawFn, msg: Message, field: descriptor.FieldDescriptor, ids: list[str], depth: int
) -> None:
    """Put an arbitrary value (or values) into one field of `msg`."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        _, value_field = field.message_type.fields
        if value_field.type == F.TYPE_STRING:
            getattr(msg, field.name).clear()
            getattr(msg, field.name).update(draw(st.dictionaries(TEXT, TEXT, max_size=4)))
        return
    count = draw(st.integers(0, 3)) if _repeated(field) else 1
    if _repeated(field):
        msg.ClearField(field.name)
    for value in [draw(scalar(field, ids, depth)) for _ in range(count)]:
        if field.type == F.TYPE_MESSAGE:
            if _repeated(field):
                getattr(msg, field.name).add().CopyFrom(value)
            else:
                getattr(msg, field.name).CopyFrom(value)
        elif _repeated(field):
            getattr(msg, field.name).append(value)
        else:
            setattr(msg, field.name, value)


WELL_KNOWN = ("google.protobuf.Struct", "google.protobuf.Timestamp", "google.protobuf.Duration")


@st.composite
def mutated(draw: st.DrawFn, bases: list[Message], ids: list[str]) -> Message:
    """A valid request with one or two fields, anywhere in it, replaced by arbitrary values: the
    calls that get past the first check and reach deeper validation."""
    base = draw(st.sampled_from(bases))
    msg = type(base)()
    msg.CopyFrom(base)
    for _ in range(draw(st.integers(1, 2))):
        target = msg
        while target.DESCRIPTOR.fields:  # (LogTarget has none)
            field = draw(st.sampled_from(list(target.DESCRIPTOR.fields)))
            nested = (
                field.message_type is not None
                and not field.message_type.GetOptions().map_entry
                and not _repeated(field)
                and field.message_type.full_name not in WELL_KNOWN
            )
            if nested and draw(st.integers(0, 3)) > 0:
                target = getattr(target, field.name)
                continue
            assign(draw, target, field, ids, 0)
            break
    return msg


def _repeated(field: descriptor.FieldDescriptor) -> bool:
    return bool(field.is_repeated) if hasattr(field, "is_repeated") else field.label == F.LABEL_REPEATED


def scalar(field: descriptor.FieldDescriptor, ids: list[str], depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        if depth > 4:
            return st.just(message_factory.GetMessageClass(field.message_type)())
        return message(message_factory.GetMessageClass(field.message_type), ids, depth + 1)
    if field.type == F.TYPE_STRING:
        if field.name in ("id", "task_id", "etag", "page_token"):
            return st.one_of(TEXT, st.sampled_from(ids))
        return TEXT
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(width=64 if field.type == F.TYPE_DOUBLE else 32)
    if field.type in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return INT64
    if field.type in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if field.type in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    return INT32  # int32, sint32, sfixed32, enums (open: unknown numbers allowed)


def valid_task(c: Cluster) -> pb.Task:
    return pb.Task(
        name="valid",
        schedule=pb.Schedule(cron=pb.CronSchedule(expression="0 0 1 1 *")),
        target=pb.Target(http=pb.HttpTarget(url=c.sink.url("/ok"))),
        payload={"a": 1},
    )


def valid_requests(c: Cluster, task: pb.Task) -> dict[str, list[Message]]:
    """A valid request per RPC that has fields worth mutating one by one."""
    once = valid_task(c)
    once.schedule.once.run_time.FromSeconds(int(time.time()) + 3600)
    cron = valid_task(c)
    cron.schedule.cron.time_zone = "Europe/Berlin"
    cron.schedule.cron.end_time.FromSeconds(int(time.time()) + 86400)
    cron.labels["team"] = "a"
    cron.timeout.FromSeconds(5)
    cron.retry_policy.max_attempts = 3
    cron.target.http.headers["X-A"] = "b"
    update = pb.UpdateTaskRequest(task=cron)
    update.task.id = task.id
    update.update_mask.paths.extend(["name", "schedule", "target", "payload", "labels"])
    return {
        "CreateTask": [pb.CreateTaskRequest(task=cron, request_id="r-1"), pb.CreateTaskRequest(task=once)],
        "UpdateTask": [update],
        "PreviewSchedule": [pb.PreviewScheduleRequest(schedule=s.schedule, count=5) for s in (cron, once)],
        "ListTasks": [pb.ListTasksRequest(page_size=10, labels={"team": "a"}, name_contains="v")],
        "ListExecutions": [pb.ListExecutionsRequest(task_id=task.id, page_size=10)],
    }


class Probe:
    """Makes calls and checks each one: documented status, Redis unchanged when rejected."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.rds = c.client()
        self.channel, self.stub = c.stub()
        self.codes: dict[str, int] = {}
        self.problems: list[str] = []

    def call(self, method: str, request: Message | bytes) -> grpc.StatusCode:
        """`request` as bytes goes on the wire as it is (what no stub would send)."""
        before = snapshot(self.rds)
        try:
            if isinstance(request, bytes):
                raw = self.channel.unary_unary(
                    f"/scheduler.v1.TaskService/{method}",
                    request_serializer=None,
                    response_deserializer=None,
                )
                raw(request, timeout=30)
            else:
                getattr(self.stub, method)(request, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        self.codes[code.name] = self.codes.get(code.name, 0) + 1
        if code not in DOCUMENTED:
            self.problems.append(f"{method} answered {code.name} to {str(request)[:300]!r}")
        if code != grpc.StatusCode.OK and snapshot(self.rds) != before:
            self.problems.append(
                f"{method} rejected with {code.name} but changed Redis: {str(request)[:300]!r}"
            )
        return code

    def close(self) -> None:
        self.channel.close()
        self.rds.close()


METHODS = {
    "CreateTask": pb.CreateTaskRequest,
    "GetTask": pb.GetTaskRequest,
    "ListTasks": pb.ListTasksRequest,
    "UpdateTask": pb.UpdateTaskRequest,
    "DeleteTask": pb.DeleteTaskRequest,
    "PauseTask": pb.PauseTaskRequest,
    "ResumeTask": pb.ResumeTaskRequest,
    "RunTask": pb.RunTaskRequest,
    "RerunExecution": pb.RerunExecutionRequest,
    "CancelExecution": pb.CancelExecutionRequest,
    "PreviewSchedule": pb.PreviewScheduleRequest,
    "ListExecutions": pb.ListExecutionsRequest,
    "GetExecution": pb.GetExecutionRequest,
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def explore(probe: Probe, method: str, requests: st.SearchStrategy[Message]) -> None:
    """Hypothesis-generated requests of one RPC, each checked by the probe."""

    @settings(
        max_examples=SCALE.examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(requests)
    def check(request: Message) -> None:
        probe.call(method, request)

    check()


def broken_tokens(token: str) -> list[str]:
    rng = random.Random(token)
    out = [token[:-1], token + "A", token[::-1], "A" * len(token), token.replace(token[3], "_", 1)]
    for _ in range(10):
        chars = list(token)
        chars[rng.randrange(len(chars))] = rng.choice("ABCxyz019-_=+/.")
        out.append("".join(chars))
    # A substitution can put back the character that was there: that is the token, not a broken one.
    return [broken for broken in out if broken != token]


def garbage(port: int, rounds: int) -> None:
    """Raw bytes at the gRPC port: noise, a broken HTTP/2 preface, malformed frames, HTTP/1."""
    rng = random.Random(port)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for i in range(rounds):
        kind = i % 5
        if kind == 0:
            data = rng.randbytes(rng.randint(1, 4096))
        elif kind == 1:
            data = preface[: rng.randint(1, len(preface) - 1)] + rng.randbytes(64)
        elif kind == 2:  # a frame header claiming 16 MiB, then noise
            data = (
                preface
                + struct.pack(">I", 0xFFFFFF)[1:]
                + bytes([rng.randrange(256), 0xFF])
                + rng.randbytes(512)
            )
        elif kind == 3:  # valid preface, empty SETTINGS, then a HEADERS frame of garbage
            body = rng.randbytes(200)
            data = (
                preface
                + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                + struct.pack(">I", len(body))[1:]
                + b"\x01\x05\x00\x00\x00\x01"
                + body
            )
        else:
            data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + rng.randbytes(32)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            try:
                sock.sendall(data)
                sock.settimeout(0.2)
                sock.recv(4096)
            except OSError:
                pass


def test_8_bad_input_against_the_live_api(figures: Recorder) -> None:
    started = time.monotonic()
    with cluster(engine=False) as c:
        probe = Probe(c)
        try:
            created = [probe.stub.CreateTask(pb.CreateTaskRequest(task=valid_task(c))).task for _ in range(3)]
            ids = [t.id for t in created] + [t.etag for t in created] + [f"{created[0].id}-0000000000000"]
            page = probe.stub.ListTasks(pb.ListTasksRequest(page_size=1))
            ids.append(page.next_page_token)
            calls = 0
            bases = valid_requests(c, created[0])
            for method, cls in METHODS.items():
                arbitrary = message(cls, ids)
                base = bases.get(method)
                explore(probe, method, st.one_of(arbitrary, mutated(base, ids)) if base else arbitrary)
                calls += SCALE.examples
            # Oversized: a payload over MAX_PAYLOAD_BYTES, a message over the 8 MiB gRPC limit.
            big = valid_task(c)
            big.payload.update({"blob": "x" * (300 * 1024)})
            if probe.call("CreateTask", pb.CreateTaskRequest(task=big)) != grpc.StatusCode.INVALID_ARGUMENT:
                probe.problems.append("a payload over MAX_PAYLOAD_BYTES was not INVALID_ARGUMENT")
            huge = valid_task(c)
            huge.target.http.body = os.urandom(9 * 1024 * 1024)
            if (
                probe.call("CreateTask", pb.CreateTaskRequest(task=huge))
                != grpc.StatusCode.RESOURCE_EXHAUSTED
            ):
                probe.problems.append("a 9 MiB request was not RESOURCE_EXHAUSTED")
            # Nesting past protobuf's recursion limit (100) when the server decodes it.
            payload = deep(200).SerializeToString()
            task = valid_task(c).SerializeToString() + b"\x3a" + _varint(len(payload)) + payload
            if (
                probe.call("CreateTask", b"\x0a" + _varint(len(task)) + task)
                != grpc.StatusCode.INVALID_ARGUMENT
            ):
                probe.problems.append("a payload nested 200 deep was not INVALID_ARGUMENT")
            # Bodies that are not messages at all.
            rng = random.Random(7)
            for method in METHODS:
                for _ in range(5):
                    body = rng.randbytes(rng.randint(1, 300))
                    if probe.call(method, body) not in DOCUMENTED:
                        probe.problems.append(f"{method}: garbage body {body!r} got an undocumented code")
            calls += 5 * len(METHODS)
            # Broken page tokens, on both list calls.
            token = page.next_page_token
            for broken in broken_tokens(token):
                for request in (
                    pb.ListTasksRequest(page_size=1, page_token=broken),
                    pb.ListExecutionsRequest(page_size=1, page_token=broken),
                ):
                    if probe.call(type(request).__name__[:-7], request) != grpc.StatusCode.INVALID_ARGUMENT:
                        probe.problems.append(f"broken page token {broken!r} was accepted")
            calls += 3 + 2 * len(broken_tokens(token))
            garbage_rounds = 10 * SCALE.examples
            for api in c.apis:
                garbage(api.port, garbage_rounds)
            for api in c.apis:
                if api.health() != SERVING or not api.alive():
                    probe.problems.append(f"{api.name} is not SERVING after the garbage")
            # and it still answers real calls
            probe.stub.ListTasks(pb.ListTasksRequest(page_size=5), timeout=10)
            if c.unexpected_restarts():
                probe.problems.append(f"died: {c.unexpected_restarts()}")
        finally:
            probe.close()
    fig = Figures("8 bad input (hypothesis, garbage)", problems=probe.problems)
    codes = ", ".join(f"{k} {v}" for k, v in sorted(probe.codes.items()))
    fig.notes = (
        f"{calls} calls to 11 RPCs ({codes}); {2 * garbage_rounds} raw garbage connections; "
        f"Redis unchanged by every rejected call; {time.monotonic() - started:.0f} s"
    )
    figures(fig)
