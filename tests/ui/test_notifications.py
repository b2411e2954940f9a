"""Notifications on the Executions page against a real api and Redis: a task's (paged, newest
first, times in the chosen zone, the state as a coloured badge, channels by name) and those of
one execution in its detail. The notifications are written as the scheduler's scripts write them
(docs/alerts.md, "Keys"): raising them for real is tests/integration/test_alerts_*.py's part."""

from __future__ import annotations

import json

import grpc
import redis

from schedcore import pb
from schedcore.store.keys import Keys
from tests.integration import helpers
from tests.integration.helpers import create, cron_task, now_ms
from tests.ui.dash import open_page, rerun_ok, texts
from ui import channelform as cf

EXECUTIONS = "views/executions.py"
GONE = "0123456789abcdef"  # a channel id no channel has (deleted)
api = helpers.api
stub = helpers.stub


def notify(
    rds: redis.Redis,
    task_id: str,
    execution_id: str,
    channel_id: str,
    kind: int,
    at_ms: int,
    **fields: object,
) -> str:
    """A notification as the scheduler records it: its hash, and its place in the task's list."""
    name = pb.AlertKind.Name(kind).removeprefix("ALERT_KIND_").lower()  # type: ignore[arg-type]
    notification_id = f"{name}.{execution_id}.{channel_id}"
    values = {"k": kind, "t": task_id, "e": execution_id, "c": channel_id, "ns": "default", "at": at_ms}
    values |= {"m": f"{name} about {execution_id}", "st": "p", "a": 0, **fields}
    rds.hset(Keys().notification(notification_id), mapping=values)  # type: ignore[arg-type]
    rds.zadd(Keys().task_notifications(task_id), {notification_id: at_ms})
    return notification_id


def tables(at):  # type: ignore[no-untyped-def]
    """The page's notification tables (the executions table has no Kind column)."""
    return [frame for frame in at.dataframe if "Kind" in frame.value.columns]


def test_a_tasks_notifications_and_an_executions(api, stub, rds, monkeypatch) -> None:
    with grpc.insecure_channel(api.target) as channel:
        hook = pb.WebhookChannel(url="https://hooks.example.com/x", signing_secrets=[cf.new_secret()])
        ops = (
            pb.alert_service_grpc.AlertServiceStub(channel)
            .CreateChannel(pb.CreateChannelRequest(channel=pb.Channel(name="ops", webhook=hook)))
            .channel
        )
    task = create(stub, cron_task("watched"))
    run = stub.RunTask(pb.RunTaskRequest(id=task.id)).execution
    t0 = now_ms() - 3_600_000
    for i in range(25):  # older ones, to page through
        notify(
            rds, task.id, f"{task.id}-{t0 - 1000 * (i + 1)}", ops.id, pb.AlertKind.ALERT_KIND_LATE, t0 - 1 - i
        )
    notify(rds, task.id, run.id, ops.id, pb.AlertKind.ALERT_KIND_FAILING, t0, st="d", a=1, end=t0 + 50)
    notify(
        rds,
        task.id,
        run.id,
        GONE,
        pb.AlertKind.ALERT_KIND_FAILING,
        t0 + 1,
        st="f",
        a=1,
        err="channel deleted",
    )
    notify(
        rds, task.id, "other-1", ops.id, pb.AlertKind.ALERT_KIND_RECOVERED, t0 + 2, a=2, err="http 503: {}"
    )

    at = open_page(monkeypatch, api.target, EXECUTIONS, task=task.id)
    at.selectbox(key="display_tz").select("Asia/Tokyo")
    rerun_ok(at)
    assert "Notifications" in [s.value for s in at.subheader]
    [frame] = tables(at)
    rows = frame.value.to_dict("records")
    assert len(rows) == 25 and "Page 1 · 1-25 · more follow" in texts(at)
    assert [(r["Kind"], r["Channel"], list(r["State"])) for r in rows[:3]] == [
        ("recovered", "ops (webhook)", ["pending"]),
        ("failing", f"(deleted) {GONE}", ["failed"]),
        ("failing", "ops (webhook)", ["delivered"]),
    ]
    assert rows[0]["Attempts"] == 2 and rows[0]["Last error"] == "http 503: {}"
    assert rows[2]["Message"] == f"failing about {run.id}" and rows[2]["Execution"] == run.id
    assert all(r["Raised"].endswith(" JST") for r in rows), rows[0]["Raised"]
    # The state is a badge, coloured as the execution statuses that mean the same.
    config = json.loads(frame.proto.columns)["State"]
    assert config["type_config"]["options"] == [
        {"value": "pending", "color": "#6c8ebf"},
        {"value": "delivered", "color": "#2e9e5b"},
        {"value": "failed", "color": "#d64545"},
    ], config
    at.button(key="pager_notifications_next").click()
    rerun_ok(at)
    [frame] = tables(at)
    assert len(frame.value) == 3 and "Page 2 · 26-28" in texts(at)

    # The execution's detail: only the notifications about it.
    at.text_input(key="x_open").input(run.id)
    rerun_ok(at)
    *_, detail = tables(at)
    assert [(r["Kind"], r["Channel"]) for r in detail.value.to_dict("records")] == [
        ("failing", f"(deleted) {GONE}"),
        ("failing", "ops (webhook)"),
    ]
    assert "Execution" not in detail.value.columns


def test_no_notifications_is_said(api, stub, monkeypatch) -> None:
    task = create(stub, cron_task("quiet"))
    run = stub.RunTask(pb.RunTaskRequest(id=task.id)).execution
    at = open_page(monkeypatch, api.target, EXECUTIONS, task=task.id, id=run.id)
    shown = texts(at)
    assert "No alert was raised about this task" in shown
    assert "No alert was raised about this execution." in shown
    assert tables(at) == []


def test_a_notifications_link_opens_its_execution(api, stub, monkeypatch) -> None:
    """A notification links to `/executions?execution=<id>` (docs/alerts.md, "Webhook body")."""
    task = create(stub, cron_task("linked"))
    run = stub.RunTask(pb.RunTaskRequest(id=task.id)).execution
    at = open_page(monkeypatch, api.target, EXECUTIONS, execution=run.id)
    assert at.text_input(key="x_open").value == run.id
    assert {m.label: m.value for m in at.metric}["Status"] == "pending"
