"""schedctl channels, alerts list and the task alert flags (docs/cli.md), run as a subprocess
against a live api on a real Redis. The notifications listed are written with redis-py in the
documented layout (docs/alerts.md, "Keys"), so the listing is checked apart from the engine that
raises them (tests/integration/test_alerts_*.py)."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

from schedcore import pb
from schedcore.sealing import Sealer, unseal_channel
from schedcore.store.keys import Keys
from tests import alert_receiver
from tests.integration.test_cli import ok, ok_json, schedctl
from tests.support import ServiceThread

KEYS = Keys()


def whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def stored(rds, channel_id: str) -> pb.Channel:
    raw = rds.hget(KEYS.channel(channel_id), "pb")
    assert raw is not None
    return unseal_channel(pb.Channel.FromString(raw), Sealer())  # no SECRET_KEYS: stored as they are


def field(out: str, name: str) -> str:
    return next(line.split(None, 1)[1] for line in out.splitlines() if line.startswith(f"{name}:"))


def test_channels_round_trip(api: ServiceThread, rds, tmp_path: Path) -> None:
    addr = api.target
    first, second, third = whsec(), whsec(), whsec()
    (tmp_path / "secret").write_text(second + "\n")
    out = ok(
        addr, "channels", "create", "--name", "on-call", "--webhook", "https://hooks.example.com/a",
        "--secret", first, "--secret", f"@{tmp_path / 'secret'}",
    )  # fmt: skip
    channel_id = field(out, "id")
    assert field(out, "to") == "https://hooks.example.com/a" and field(out, "etag") == "1"
    assert list(stored(rds, channel_id).webhook.signing_secrets) == [first, second]
    for shown in (
        out,
        ok(addr, "channels", "get", channel_id),
        ok(addr, "channels", "get", channel_id, "-o", "json"),
    ):
        assert first not in shown and second not in shown
    mail = ok_json(
        addr, "channels", "create", "--name", "mail", "--email", "a@example.com", "--email", "b@example.com"
    )
    assert mail["email"]["to"] == ["a@example.com", "b@example.com"] and mail["namespace"] == "default"

    listed = ok(addr, "channels", "list")
    rows = [line.split()[:4] for line in listed.splitlines()[1:]]
    assert rows == [[mail["id"], "mail", "default", "email"], [channel_id, "on-call", "default", "webhook"]]

    # An update that names no secret keeps them; --secret replaces them.
    out = ok(addr, "channels", "update", channel_id, "--name", "pager")
    assert field(out, "name") == "pager" and field(out, "etag") == "2"
    assert list(stored(rds, channel_id).webhook.signing_secrets) == [first, second]
    ok(addr, "channels", "update", channel_id, "--secret", third)
    assert list(stored(rds, channel_id).webhook.signing_secrets) == [third]
    stale = schedctl(addr, "channels", "update", channel_id, "--name", "x", "--etag", "1")
    assert stale.returncode == 10 + 10 and "ABORTED" in stale.stderr  # 10 + ABORTED
    bad = schedctl(
        addr, "channels", "create", "--name", "w", "--webhook", "https://x.example", "--secret", "whsec_x"
    )
    assert bad.returncode == 13 and "channel.webhook.signing_secrets[0]" in bad.stderr
    usage = schedctl(addr, "channels", "create", "--name", "none")
    assert usage.returncode == 2 and "--webhook" in usage.stderr

    assert schedctl(addr, "channels", "delete", channel_id, "--etag", "1").returncode == 20
    assert ok(addr, "channels", "delete", channel_id).strip() == f"deleted {channel_id}"
    assert schedctl(addr, "channels", "get", channel_id).returncode == 15  # NOT_FOUND


def test_task_alert_flags_and_alerts_list(api: ServiceThread, rds) -> None:
    addr = api.target
    channel = ok_json(addr, "channels", "create", "--name", "mail", "--email", "ops@example.com")["id"]
    out = ok(
        addr, "create", "--name", "watched", "--cron", "@hourly", "--alert-channel", channel,
        "--alert-failures", "3", "--alert-recovery", "--alert-late", "5m", "--alert-running", "1h",
    )  # fmt: skip
    task_id = field(out, "id")
    assert field(out, "alerts") == f"3 failures in a row, recovery, late 5m00s, running 1h00m -> {channel}"
    task = json.loads(ok(addr, "get", task_id, "-o", "json"))
    assert task["alerts"] == {
        "channelIds": [channel],
        "consecutiveFailures": 3,
        "recovery": True,
        "lateStart": "300s",
        "runningLongerThan": "3600s",
    }
    out = ok(addr, "update", task_id, "--no-alert-recovery", "--alert-skipped", "--alert-late", "0")
    assert field(out, "alerts") == f"3 failures in a row, skipped, running 1h00m -> {channel}"
    refused = schedctl(addr, "update", task_id, "--alert-channel", "0123456789abcdef")
    assert refused.returncode == 13 and "task.alerts.channel_ids[0]" in refused.stderr
    assert "alerts:" not in ok(addr, "update", task_id, "--clear-alerts")

    # Notifications as the scheduler will write them (docs/alerts.md, "Keys").
    execution = f"{task_id}-1765166400000"
    for kind, at, state, extra in (
        ("failing", 1_765_166_401_000, "f", {"a": 8, "err": "http 500", "end": 1_765_170_000_000}),
        ("recovered", 1_765_166_402_000, "d", {"a": 1, "end": 1_765_166_403_000}),
    ):
        notification_id = f"{kind}.{execution}.{channel}"
        number = pb.AlertKind.Value(f"ALERT_KIND_{kind.upper()}")
        rds.hset(
            KEYS.notification(notification_id),
            mapping={"k": number, "t": task_id, "e": execution, "c": channel, "ns": "default",
                     "m": f"{kind} alert", "at": at, "st": state, **extra},
        )  # fmt: skip
        rds.zadd(KEYS.task_notifications(task_id), {notification_id: at})
    lines = ok(addr, "alerts", "list", task_id).splitlines()
    assert lines[0].split() == [
        "TIME",
        "KIND",
        "CHANNEL",
        "STATE",
        "ATTEMPTS",
        "MESSAGE",
        "/",
        "LAST",
        "ERROR",
    ]
    assert lines[1].split() == [
        "2025-12-08T04:00:02Z",
        "recovered",
        channel,
        "delivered",
        "1",
        "recovered",
        "alert",
    ]
    assert lines[2].split() == [
        "2025-12-08T04:00:01Z", "failing", channel, "failed", "8", "failing", "alert", "(http", "500)",
    ]  # fmt: skip
    listed = ok_json(addr, "alerts", "list", task_id, "--limit", "1")
    assert [n["kind"] for n in listed["notifications"]] == ["ALERT_KIND_RECOVERED"] and listed[
        "nextPageToken"
    ]


def test_channels_test_sends_now_and_fails_with_the_channels_answer(api: ServiceThread, rds) -> None:
    addr = api.target
    secret = whsec()
    receiver = alert_receiver.start()
    try:
        good = field(
            ok(
                addr,
                "channels",
                "create",
                "--name",
                "probe",
                "--webhook",
                f"{receiver.url}/hook",
                "--secret",
                secret,
            ),
            "id",
        )
        assert ok(addr, "channels", "test", good).strip() == f"delivered a test notification through {good}"
        [sent] = receiver.notifications()
        assert alert_receiver.verify(secret, sent.headers, sent.body) and sent.json["type"] == "channel.test"
        bad = field(
            ok(
                addr,
                "channels",
                "create",
                "--name",
                "no",
                "--webhook",
                f"{receiver.url}/fail/9",
                "--secret",
                secret,
            ),
            "id",
        )
        refused = schedctl(addr, "channels", "test", bad)
        assert (
            refused.returncode == 1
            and f"channel {bad} did not take the test notification: http 503" in refused.stderr
        )
    finally:
        receiver.close()
