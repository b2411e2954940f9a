"""ListNotifications against a real api on a real Redis.

Nothing raises notifications yet (the scheduler's side comes with the delivery loop), so these
tests write the notification hashes and the task's index themselves with redis-py, in the layout
docs/alerts.md ("Keys") and schedcore/store/keys.py (Keys.notification) document; the api only
reads them."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import redis

from schedcore import pb
from schedcore.store.keys import Keys
from tests.integration.auth_support import VIEWER, AuthApi
from tests.integration.helpers import TIMEOUT, create, cron_task, invalid, rpc_error
from tests.support import ServiceThread

KEYS = Keys()
K = pb.AlertKind
ST = pb.NotificationState
CHANNEL = "fedcba9876543210"
T0 = 1_765_166_400_000


@pytest.fixture()
def alerts(api: ServiceThread) -> Iterator[pb.alert_service_grpc.AlertServiceStub]:
    with grpc.insecure_channel(api.target) as channel:
        yield pb.alert_service_grpc.AlertServiceStub(channel)


def raise_notification(
    rds: redis.Redis, task_id: str, kind: int, at_ms: int, state: str = "p", **fields: object
) -> str:
    """Write one notification as the scheduler's scripts will (docs/alerts.md, "Keys")."""
    execution = f"{task_id}-{at_ms - 1000:013d}"
    notification_id = f"{K.Name(kind).removeprefix('ALERT_KIND_').lower()}.{execution}.{CHANNEL}"
    values: dict[str, object] = {
        "k": kind, "t": task_id, "e": execution, "c": CHANNEL, "ns": "default",
        "m": f"{K.Name(kind)} at {at_ms}", "at": at_ms, "st": state, "a": 0,
        **fields,
    }  # fmt: skip
    rds.hset(KEYS.notification(notification_id), mapping=values)  # type: ignore[arg-type]
    rds.zadd(KEYS.task_notifications(task_id), {notification_id: at_ms})
    return notification_id


def list_page(alerts, task_id: str, size: int = 0, token: str = "") -> pb.ListNotificationsResponse:
    request = pb.ListNotificationsRequest(task_id=task_id, page_size=size, page_token=token)
    return alerts.ListNotifications(request, timeout=TIMEOUT)  # type: ignore[no-any-return]


def test_notifications_decode_newest_first(stub, alerts, rds: redis.Redis) -> None:
    task = create(stub, cron_task("watched"))
    failing = raise_notification(
        rds, task.id, K.ALERT_KIND_FAILING, T0, "f", a=8, err="http 500", end=T0 + 3_600_000
    )
    recovered = raise_notification(
        rds, task.id, K.ALERT_KIND_RECOVERED, T0 + 60_000, "d", a=1, end=T0 + 61_000
    )
    late = raise_notification(rds, task.id, K.ALERT_KIND_LATE, T0 + 120_000)
    got = list_page(alerts, task.id).notifications
    assert [n.id for n in got] == [late, recovered, failing]
    pending, delivered, failed = got
    assert (pending.kind, pending.state, pending.attempts) == (
        K.ALERT_KIND_LATE,
        ST.NOTIFICATION_STATE_PENDING,
        0,
    )
    assert not pending.HasField("end_time")
    assert pending.create_time.ToMilliseconds() == T0 + 120_000
    assert (delivered.kind, delivered.state, delivered.attempts) == (
        K.ALERT_KIND_RECOVERED,
        ST.NOTIFICATION_STATE_DELIVERED,
        1,
    )
    assert failed.state == ST.NOTIFICATION_STATE_FAILED and failed.last_error == "http 500"
    assert failed.end_time.ToMilliseconds() == T0 + 3_600_000 and failed.attempts == 8
    assert (failed.task_id, failed.channel_id, failed.message) == (
        task.id,
        CHANNEL,
        f"ALERT_KIND_FAILING at {T0}",
    )
    assert failed.execution_id == f"{task.id}-{T0 - 1000:013d}"


def test_pages_walk_every_notification_once(stub, alerts, rds: redis.Redis) -> None:
    task = create(stub, cron_task("busy"))
    made = [raise_notification(rds, task.id, K.ALERT_KIND_SKIPPED, T0 + i * 1000) for i in range(7)]
    # Two raised in the same millisecond (one per channel of one alert), and one whose hash has
    # expired while its index entry stays: the page neither repeats, skips nor shows it.
    tie = raise_notification(rds, task.id, K.ALERT_KIND_RUNNING_LONG, T0 + 3000)
    gone = raise_notification(rds, task.id, K.ALERT_KIND_LATE, T0 + 5000)
    rds.delete(KEYS.notification(gone))
    seen, token, pages = [], "", 0
    while True:
        reply = list_page(alerts, task.id, size=1, token=token)  # a page ends between the tie
        seen += [n.id for n in reply.notifications]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    expected = sorted(
        [*made, tie], key=lambda i: (int(rds.zscore(KEYS.task_notifications(task.id), i)), i), reverse=True
    )
    assert seen == expected and len(set(seen)) == 8 and pages >= 8
    other = create(stub, cron_task("other"))
    first = list_page(alerts, task.id, size=2)
    invalid(lambda: list_page(alerts, other.id, token=first.next_page_token), "page_token")
    invalid(lambda: list_page(alerts, task.id, size=-1), "page_size")
    assert len(list_page(alerts, task.id, size=200).notifications) == 8
    assert len(list_page(alerts, task.id, size=201).notifications) == 8  # AIP-158: coerced


def test_the_task_must_exist(alerts, rds: redis.Redis) -> None:
    rpc_error(lambda: list_page(alerts, "0123456789abcdef"), grpc.StatusCode.NOT_FOUND)
    invalid(lambda: list_page(alerts, ""), "task_id")
    invalid(lambda: list_page(alerts, "nope"), "task_id")


def test_a_namespace_token_reads_only_its_tasks_notifications(auth_api: AuthApi, rds: redis.Redis) -> None:
    admin = auth_api.admin
    theirs = create(admin.tasks, cron_task("theirs", namespace="team-b"))  # type: ignore[arg-type]
    mine = create(admin.tasks, cron_task("mine", namespace="team-a"))  # type: ignore[arg-type]
    raise_notification(rds, theirs.id, K.ALERT_KIND_FAILING, T0)
    ours = raise_notification(rds, mine.id, K.ALERT_KIND_FAILING, T0)
    _, secret = admin.new_token("team a", VIEWER, namespace="team-a")
    team_a = admin.as_token(secret)
    rpc_error(
        lambda: team_a.alerts.ListNotifications(pb.ListNotificationsRequest(task_id=theirs.id)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    got = team_a.alerts.ListNotifications(pb.ListNotificationsRequest(task_id=mine.id)).notifications
    assert [n.id for n in got] == [ours]
