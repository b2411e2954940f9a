"""Alerts end to end (docs/alerts.md): the api, schedulers and an executor as processes, a task that
fails, a local receiver. Signed webhooks verify (a tampered body does not), one notification per
incident with two scheduler replicas, a kill -9 of the scheduler mid-delivery neither loses nor
duplicates it, Slack-style posts and mail through a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import base64
import contextlib
import email
import secrets
import signal
from collections.abc import Iterator

import pytest
import redis
from aiosmtpd.controller import Controller

from schedcore import pb
from schedcore.store.keys import Keys
from tests import alert_receiver
from tests.alert_receiver import Receiver, verify
from tests.integration.engine_support import Suite, http, once_in, suite
from tests.support import RedisServer, free_port, wait_for

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
FAST = {"ALERT_TIMEOUT_SECONDS": "1", "ALERT_SWEEP_SECONDS": "0.2"}  # a lease of 8 s


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = alert_receiver.start()
    yield r
    r.close()


def failing_task(s: Suite, receiver: Receiver, channel_id: str, **rules: object) -> pb.Task:
    every = pb.Schedule(interval=pb.IntervalSchedule())
    every.interval.every.FromMilliseconds(1_000)
    alerts = pb.AlertPolicy(channel_ids=[channel_id], **rules)  # type: ignore[arg-type]
    return s.create("flaky", every, http(f"{receiver.url}/target/500"), alerts=alerts)


def notification(rds: redis.Redis, nid: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in rds.hgetall(Keys().notification(nid)).items()}


def test_a_failing_task_sends_one_signed_webhook_per_incident_from_two_schedulers_and_recovery(
    redis_srv: RedisServer, rds: redis.Redis, receiver: Receiver
) -> None:
    with suite(redis_srv, schedulers=2, executors=1, DASHBOARD_URL="https://sched.example.com/", **FAST) as s:
        channel = s.create_channel(
            pb.Channel(
                name="ops", webhook=pb.WebhookChannel(url=f"{receiver.url}/hook", signing_secrets=[SECRET])
            ),
        )
        task = failing_task(s, receiver, channel, consecutive_failures=2, recovery=True)
        wait_for(lambda: len(receiver.notifications()) >= 1, 20)
        wait_for(
            lambda: (
                sum(e.status == pb.ExecutionStatus.EXECUTION_STATUS_FAILED for e in s.executions(task.id))
                >= 5
            ),
            20,
        )
        [failing] = receiver.notifications()  # five failures in a row, two replicas: one alert
        assert verify(SECRET, failing.headers, failing.body)
        assert not verify(SECRET, failing.headers, failing.body.replace(b"FAILED", b"FAILEd"))  # tampered
        assert not verify(
            "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(), failing.headers, failing.body
        )
        body = failing.json
        assert body["type"] == "task.failing"
        data = body["data"]
        assert data["task"] == {"id": task.id, "name": "flaky", "namespace": "default"}
        assert failing.id == data["notification_id"] == f"failing.{data['execution_id']}.{channel}"
        assert data["message"].startswith("2 executions in a row ended FAILED or TIMED_OUT; the last: ")
        assert data["link"] == f"https://sched.example.com/executions?id={data['execution_id']}"
        wait_for(lambda: notification(rds, failing.id).get("st") == "d", 10)
        assert notification(rds, failing.id)["a"] == "1"

        update = pb.UpdateTaskRequest(task=pb.Task(id=task.id, target=http(f"{receiver.url}/target/200")))
        update.update_mask.paths.append("target")
        s.stub.UpdateTask(update)
        wait_for(lambda: len(receiver.notifications()) >= 2, 20)
        recovered = receiver.notifications()[1]
        assert recovered.json["type"] == "task.recovered" and verify(
            SECRET, recovered.headers, recovered.body
        )
        assert len({r.id for r in receiver.notifications()}) == len(receiver.notifications()) == 2


def test_a_scheduler_killed_mid_delivery_neither_loses_nor_duplicates_the_notification(
    redis_srv: RedisServer, rds: redis.Redis, receiver: Receiver
) -> None:
    with suite(redis_srv, schedulers=1, executors=1, **FAST) as s:
        channel = s.create_channel(
            pb.Channel(
                name="held", webhook=pb.WebhookChannel(url=f"{receiver.url}/hold", signing_secrets=[SECRET])
            ),
        )
        [scheduler] = [p for p in s.processes if "services.scheduler" in " ".join(map(str, p.args))]
        failing_task(s, receiver, channel, consecutive_failures=1)
        wait_for(lambda: len(receiver.notifications()) == 1, 20)  # held: no answer comes
        scheduler.send_signal(signal.SIGKILL)
        scheduler.wait(5)
        [held] = receiver.notifications()
        assert notification(rds, held.id)["st"] == "p"  # not recorded: it must go again
        s.start_scheduler(free_port(), **FAST)
        wait_for(lambda: notification(rds, held.id).get("st") == "d", 30)
        sent = receiver.notifications()
        assert len(sent) == 2 and {r.id for r in sent} == {held.id}  # the same id twice: one notification
        assert sent[1].body == held.body and verify(SECRET, sent[1].headers, sent[1].body)
        assert notification(rds, held.id)["a"] == "2"


class Inbox:
    def __init__(self) -> None:
        self.mails: list[email.message.Message] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.mails.append(email.message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 OK"


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def test_slack_posts_and_mail_through_the_smtp_server_and_a_refused_attempt_is_retried(
    redis_srv: RedisServer, rds: redis.Redis, receiver: Receiver
) -> None:
    with (
        smtp_server() as (port, inbox),
        suite(
            redis_srv,
            schedulers=1,
            executors=1,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(port),
            SMTP_STARTTLS="false",
            SMTP_FROM="alerts@example.com",
            **FAST,
        ) as s,
    ):
        slack = s.create_channel(
            pb.Channel(name="chat", slack=pb.SlackChannel(webhook_url=f"{receiver.url}/fail/1"))
        )
        to = ["oncall@example.com", "b@example.com"]
        mail = s.create_channel(pb.Channel(name="mail", email=pb.EmailChannel(to=to)))
        every = pb.Schedule(interval=pb.IntervalSchedule())
        every.interval.every.FromMilliseconds(1_000)
        alerts = pb.AlertPolicy(channel_ids=[slack, mail], consecutive_failures=1)
        task = s.create("nightly", every, http(f"{receiver.url}/target/500"), alerts=alerts)
        wait_for(lambda: len(inbox.mails) == 1, 20)
        [message] = inbox.mails
        assert message["Subject"] == "[tasksched] task.failing: nightly (default)"
        assert (
            message["From"] == "alerts@example.com" and message["To"] == "oncall@example.com, b@example.com"
        )
        nid = "".join(message["Message-ID"].split()).strip("<>").removesuffix("@tasksched")  # unfolded
        assert nid.startswith("failing.") and nid.endswith(f".{mail}")
        assert "1 execution ended FAILED or TIMED_OUT: " in message.get_payload()
        # the Slack hook refused the first attempt (503): sent again after the 5 s backoff
        wait_for(lambda: len(receiver.notifications("/fail")) == 2, 20)
        first, second = receiver.notifications("/fail")
        assert first.body == second.body
        assert second.json["text"].startswith("*task.failing: nightly (default)*\n1 execution ended FAILED")
        slack_id = nid.removesuffix(mail) + slack
        wait_for(lambda: notification(rds, slack_id).get("st") == "d", 10)
        assert notification(rds, slack_id)["a"] == "2"
        assert notification(rds, nid)["st"] == "d"
        assert task.id == notification(rds, nid)["t"]


def test_runs_no_executor_takes_raise_late_through_the_schedulers_sweep_fired_or_run_by_hand(
    redis_srv: RedisServer, rds: redis.Redis, receiver: Receiver
) -> None:
    with suite(redis_srv, schedulers=1, executors=0, **FAST) as s:
        hook = pb.WebhookChannel(url=f"{receiver.url}/hook", signing_secrets=[SECRET])
        channel = s.create_channel(pb.Channel(name="late", webhook=hook))
        alerts = pb.AlertPolicy(channel_ids=[channel])
        alerts.late_start.FromSeconds(1)
        task = s.create("stuck", once_in(0.5), alerts=alerts)
        wait_for(lambda: len(receiver.notifications()) == 1, 20)
        [late] = receiver.notifications()
        assert late.json["type"] == "task.late" and late.json["data"]["task"]["id"] == task.id
        assert late.json["data"]["message"].endswith("after its nominal time (the limit: 1 s)")
        [run] = s.executions(task.id)
        assert run.status == pb.ExecutionStatus.EXECUTION_STATUS_PENDING  # still waiting: late, not lost
        manual = s.stub.RunTask(pb.RunTaskRequest(id=task.id)).execution  # watched the same way
        wait_for(lambda: len(receiver.notifications()) == 2, 20)
        assert receiver.notifications()[1].json["data"]["execution_id"] == manual.id
