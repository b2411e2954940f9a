"""Task.alerts (an AlertPolicy) through CreateTask, BatchCreateTasks and UpdateTask against a real
api on a real Redis: the channels named must exist in the task's namespace, and the rules are
bounded (docs/alerts.md)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import redis
from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import pb
from tests.integration.helpers import TIMEOUT, create, cron_task, duration, invalid, snapshot
from tests.support import ServiceThread

Stub = pb.task_service_grpc.TaskServiceStub
PATH = "task.alerts"


@pytest.fixture()
def channels(api: ServiceThread) -> Iterator[pb.alert_service_grpc.AlertServiceStub]:
    with grpc.insecure_channel(api.target) as channel:
        yield pb.alert_service_grpc.AlertServiceStub(channel)


def new_channel(alerts: pb.alert_service_grpc.AlertServiceStub, name: str, namespace: str = "") -> str:
    channel = pb.Channel(name=name, namespace=namespace, email=pb.EmailChannel(to=["ops@example.com"]))
    return str(alerts.CreateChannel(pb.CreateChannelRequest(channel=channel), timeout=TIMEOUT).channel.id)


def alerting(name: str, *channel_ids: str, **rules: object) -> pb.Task:
    task = cron_task(name)
    task.alerts.CopyFrom(pb.AlertPolicy(channel_ids=channel_ids, **rules))  # type: ignore[arg-type]
    return task


def test_a_task_stores_its_alert_policy(stub: Stub, channels) -> None:
    a, b = new_channel(channels, "a"), new_channel(channels, "b")
    policy = pb.AlertPolicy(
        channel_ids=[a, b],
        consecutive_failures=3,
        recovery=True,
        skipped=True,
        late_start=duration(300),
        running_longer_than=duration(3600),
    )
    task = cron_task("watched")
    task.alerts.CopyFrom(policy)
    made = create(stub, task)
    assert made.alerts == policy
    assert stub.GetTask(pb.GetTaskRequest(id=made.id), timeout=TIMEOUT).task.alerts == policy
    # Zero durations are "never" and stored unset.
    quiet = create(stub, alerting("zero", a, skipped=True, late_start=duration(0)))
    assert not quiet.alerts.HasField("late_start")


@pytest.mark.parametrize(
    ("field", "rules"),
    [
        (f"{PATH}.consecutive_failures", {"consecutive_failures": 1001}),
        (f"{PATH}.consecutive_failures", {"consecutive_failures": -1}),
        (f"{PATH}.late_start", {"late_start": duration(0.5)}),
        (f"{PATH}.late_start", {"late_start": duration(1.5)}),
        (f"{PATH}.late_start", {"late_start": duration(24 * 3600 + 1)}),
        (f"{PATH}.running_longer_than", {"running_longer_than": duration(7 * 86400 + 1)}),
        (f"{PATH}.running_longer_than", {"running_longer_than": duration(-5)}),
        (f"{PATH}.recovery", {"recovery": True}),
    ],
)
def test_rules_are_bounded(stub: Stub, channels, rds: redis.Redis, field: str, rules: dict) -> None:
    channel = new_channel(channels, "c")
    before = snapshot(rds)
    invalid(lambda: create(stub, alerting("bad", channel, **rules)), field)
    assert snapshot(rds) == before


def test_channels_must_be_named_and_exist_in_the_tasks_namespace(stub: Stub, channels) -> None:
    mine = new_channel(channels, "mine")
    theirs = new_channel(channels, "theirs", namespace="team-b")
    unknown = "0123456789abcdef"
    invalid(lambda: create(stub, alerting("no channels", consecutive_failures=2)), f"{PATH}.channel_ids")
    invalid(lambda: create(stub, alerting("no rules", mine)), PATH)
    err = invalid(
        lambda: create(stub, alerting("unknown", mine, unknown, skipped=True)), f"{PATH}.channel_ids[1]"
    )
    assert unknown in (err.details() or "")
    err = invalid(lambda: create(stub, alerting("elsewhere", theirs, skipped=True)), f"{PATH}.channel_ids[0]")
    # Another namespace's channel reads as a missing one.
    assert "team-b" not in (err.details() or "") and "default" in (err.details() or "")
    invalid(lambda: create(stub, alerting("twice", mine, mine, skipped=True)), f"{PATH}.channel_ids[1]")
    invalid(lambda: create(stub, alerting("malformed", "nope", skipped=True)), f"{PATH}.channel_ids[0]")
    six = [new_channel(channels, f"n{i}") for i in range(6)]
    invalid(lambda: create(stub, alerting("too many", *six, skipped=True)), f"{PATH}.channel_ids")
    assert create(stub, alerting("five", *six[:5], skipped=True)).alerts.channel_ids == six[:5]
    # The same channel id in team-b's task is fine.
    task = alerting("theirs", theirs, skipped=True)
    task.namespace = "team-b"
    assert create(stub, task).alerts.channel_ids == [theirs]


def test_batch_create_names_the_request(stub: Stub, channels, rds: redis.Redis) -> None:
    good = new_channel(channels, "good")
    requests = [
        pb.CreateTaskRequest(task=alerting("ok", good, skipped=True)),
        pb.CreateTaskRequest(task=alerting("bad", "0123456789abcdef", skipped=True)),
        pb.CreateTaskRequest(task=alerting("worse", good, consecutive_failures=5000)),
    ]
    before = snapshot(rds)
    batch = pb.BatchCreateTasksRequest(requests=requests)
    invalid(
        lambda: stub.BatchCreateTasks(batch, timeout=TIMEOUT), "requests[2].task.alerts.consecutive_failures"
    )
    del batch.requests[2]
    invalid(lambda: stub.BatchCreateTasks(batch, timeout=TIMEOUT), "requests[1].task.alerts.channel_ids[0]")
    assert snapshot(rds) == before
    del batch.requests[1]
    assert stub.BatchCreateTasks(batch, timeout=TIMEOUT).tasks[0].alerts.channel_ids == [good]


def test_update_task_sets_clears_and_rechecks_alerts(stub: Stub, channels) -> None:
    a = new_channel(channels, "a")
    task = create(stub, cron_task("plain"))
    change = pb.Task(id=task.id, alerts=pb.AlertPolicy(channel_ids=[a], consecutive_failures=2))
    mask = FieldMask(paths=["alerts"])
    updated = stub.UpdateTask(pb.UpdateTaskRequest(task=change, update_mask=mask), timeout=TIMEOUT).task
    assert list(updated.alerts.channel_ids) == [a] and updated.alerts.consecutive_failures == 2
    # An empty mask takes the fields set: alerts among them.
    change.alerts.running_longer_than.CopyFrom(duration(60))
    updated = stub.UpdateTask(pb.UpdateTaskRequest(task=change), timeout=TIMEOUT).task
    assert updated.alerts.running_longer_than.seconds == 60
    bad = pb.Task(id=task.id, alerts=pb.AlertPolicy(channel_ids=[a], late_start=duration(90000)))
    invalid(
        lambda: stub.UpdateTask(pb.UpdateTaskRequest(task=bad, update_mask=mask), timeout=TIMEOUT),
        f"{PATH}.late_start",
    )
    # A channel deleted since: the task keeps its id, and an update is refused until it goes.
    channels.DeleteChannel(pb.DeleteChannelRequest(id=a), timeout=TIMEOUT)
    assert list(stub.GetTask(pb.GetTaskRequest(id=task.id), timeout=TIMEOUT).task.alerts.channel_ids) == [a]
    rename = pb.UpdateTaskRequest(
        task=pb.Task(id=task.id, name="renamed"), update_mask=FieldMask(paths=["name"])
    )
    invalid(lambda: stub.UpdateTask(rename, timeout=TIMEOUT), f"{PATH}.channel_ids[0]")
    # The mask naming alerts with alerts unset clears them.
    cleared = stub.UpdateTask(
        pb.UpdateTaskRequest(task=pb.Task(id=task.id), update_mask=mask), timeout=TIMEOUT
    ).task
    assert not cleared.HasField("alerts")
    assert stub.UpdateTask(rename, timeout=TIMEOUT).task.name == "renamed"
