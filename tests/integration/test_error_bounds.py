"""Errors stay small whatever the client sent: a default gRPC client (no raised metadata limits)
gets INVALID_ARGUMENT naming the field, not RESOURCE_EXHAUSTED because the trailers were too big
(issue 13, item 2)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import pb
from schedcore.errors import field_violations
from tests.integration import helpers
from tests.integration.helpers import TIMEOUT, create, cron_task, invalid, once_task
from tests.support import ServiceThread

api = helpers.api  # once per module (helpers.py)


@pytest.fixture()
def default_stub(api: ServiceThread, rds: object) -> Iterator[pb.task_service_grpc.TaskServiceStub]:
    """A client with gRPC's defaults: no channel options at all."""
    with grpc.insecure_channel(api.target) as channel:
        yield pb.task_service_grpc.TaskServiceStub(channel)


def trailer_bytes(err: grpc.RpcError) -> int:
    """What the status costs a client: its message plus every trailing metadata entry."""
    size = len((err.details() or "").encode())
    for key, value in err.trailing_metadata() or ():
        size += len(key) + len(value if isinstance(value, bytes) else value.encode())
    return size


def check_bounded(err: grpc.RpcError, field: str) -> list[tuple[str, str]]:
    assert trailer_bytes(err) < 4096, trailer_bytes(err)
    found = field_violations(err)
    assert found and all(f == field or f.startswith(field) for f, _ in found), found
    return found


def test_64_bad_label_keys(default_stub: pb.task_service_grpc.TaskServiceStub) -> None:
    task = once_task("labels")
    for i in range(64):
        task.labels[f"BAD-{i:02d}-" + "K" * 2000] = "v"
    err = invalid(lambda: create(default_stub, task), "task.labels")
    found = check_bounded(err, "task.labels")
    assert len(found) <= 10
    assert f"and {64 - len(found)} more" in (err.details() or "")
    # The bad value is quoted by a short prefix, not in full.
    assert all("K" * 65 not in description for _, description in found)


def test_a_6000_character_time_zone(default_stub: pb.task_service_grpc.TaskServiceStub) -> None:
    task = cron_task("tz", time_zone="Europe/" + "Z" * 6000)
    err = invalid(lambda: create(default_stub, task), "task.schedule.cron.time_zone")
    found = check_bounded(err, "task.schedule.cron.time_zone")
    assert "Europe/ZZZ" in found[0][1] and "..." in found[0][1]


def test_an_update_mask_of_5000_unknown_paths(default_stub: pb.task_service_grpc.TaskServiceStub) -> None:
    task = create(default_stub, cron_task("target"))
    paths = [f"no_such_field_{i}_" + "p" * 40 for i in range(5000)]
    request = pb.UpdateTaskRequest(task=pb.Task(id=task.id, name="x"), update_mask=FieldMask(paths=paths))
    err = invalid(lambda: default_stub.UpdateTask(request, timeout=TIMEOUT), "update_mask")
    found = check_bounded(err, "update_mask")
    assert f"and {5000 - len(found)} more" in (err.details() or "")


def test_non_ascii_values_are_bounded_on_the_wire_too(
    default_stub: pb.task_service_grpc.TaskServiceStub,
) -> None:
    # grpc-message is percent-encoded: one such character costs up to 12 bytes in the trailer.
    task = once_task("unicode")
    for i in range(64):
        task.labels[f"\u00e9{i:02d}" + "\U0001f600" * 500] = "v"
    err = invalid(lambda: create(default_stub, task), "task.labels")
    check_bounded(err, "task.labels")
