"""The task form's Alerts section against a real api and Redis: the policy sent, loaded back and
said in words; the api's errors by their fields; a deleted channel shown so it can be taken out."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from schedcore import pb
from tests.integration import helpers
from tests.integration.helpers import create, cron_task, get, list_all_tasks
from tests.ui.dash import open_page, rerun_ok, texts
from tests.ui.test_forms import column_with
from ui import channelform as cf

EDIT = "views/edit.py"
api = helpers.api
stub = helpers.stub


@pytest.fixture()
def alerts(api, stub) -> Iterator[pb.alert_service_grpc.AlertServiceStub]:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(api.target) as channel:
        yield pb.alert_service_grpc.AlertServiceStub(channel)


def channel(alerts, name: str, namespace: str = "") -> pb.Channel:  # type: ignore[no-untyped-def]
    if name.startswith("mail"):
        spec = pb.Channel(name=name, namespace=namespace, email=pb.EmailChannel(to=["ops@example.com"]))
    else:
        hook = pb.WebhookChannel(url="https://hooks.example.com/x", signing_secrets=[cf.new_secret()])
        spec = pb.Channel(name=name, namespace=namespace, webhook=hook)
    return alerts.CreateChannel(pb.CreateChannelRequest(channel=spec)).channel  # type: ignore[no-any-return]


def errors_by(at, key: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.value for e in column_with(at, key).error]


def test_alert_rules_are_sent_said_in_words_and_loaded_back(api, stub, alerts, monkeypatch) -> None:
    ops, mail = channel(alerts, "ops"), channel(alerts, "mail")
    channel(alerts, "elsewhere", "team-b")  # another namespace's: not offered
    at = open_page(monkeypatch, api.target, EDIT)
    picker = at.multiselect(key="e_alert_channels")
    assert picker.options == ["mail (email)", "ops (webhook)"]
    assert "No alerts." in texts(at)
    at.text_input(key="e_name").input("watched")
    picker.set_value([ops.id, mail.id])
    at.number_input(key="e_alert_failures").set_value(3)
    at.checkbox(key="e_alert_recovery").check()
    at.checkbox(key="e_alert_skipped").check()
    at.number_input(key="e_alert_late").set_value(10)
    at.number_input(key="e_alert_running").set_value(90)
    at.selectbox(key="e_alert_running_unit").select("seconds")
    rerun_ok(at)
    assert (
        "Alerts go to ops (webhook), mail (email) when 3 executions in a row fail; when it succeeds "
        "again after that; when occurrences are skipped; when a run has not started 10 min after its "
        "time; when an attempt runs longer than 1 min 30 s."
    ) in texts(at)
    at.button(key="e_save").click()
    rerun_ok(at)
    assert "Created task" in texts(at), texts(at)
    [task] = list_all_tasks(stub)
    assert list(task.alerts.channel_ids) == [ops.id, mail.id]
    assert (task.alerts.consecutive_failures, task.alerts.recovery, task.alerts.skipped) == (3, True, True)
    assert (task.alerts.late_start.seconds, task.alerts.running_longer_than.seconds) == (600, 90)

    edit = open_page(monkeypatch, api.target, EDIT, id=task.id)
    assert edit.multiselect(key="e_alert_channels").value == [ops.id, mail.id]
    assert edit.number_input(key="e_alert_failures").value == 3
    assert edit.checkbox(key="e_alert_recovery").value and edit.checkbox(key="e_alert_skipped").value
    assert (edit.number_input(key="e_alert_late").value, edit.selectbox(key="e_alert_late_unit").value) == (
        10,
        "minutes",
    )
    assert edit.number_input(key="e_alert_running").value == 90
    assert edit.selectbox(key="e_alert_running_unit").value == "seconds"
    assert "when 3 executions in a row fail" in texts(edit)
    # No alerts any more: the policy is stored unset.
    edit.multiselect(key="e_alert_channels").set_value([])
    for key in ("e_alert_failures", "e_alert_late", "e_alert_running"):
        edit.number_input(key=key).set_value(0)
    edit.checkbox(key="e_alert_recovery").uncheck()
    edit.checkbox(key="e_alert_skipped").uncheck()
    edit.button(key="e_save").click()
    rerun_ok(edit)
    assert not get(stub, task.id).HasField("alerts")


def test_alert_errors_land_by_their_fields(api, stub, alerts, monkeypatch) -> None:
    at = open_page(monkeypatch, api.target, EDIT)
    at.text_input(key="e_name").input("noisy")
    at.checkbox(key="e_alert_recovery").check()
    at.number_input(key="e_alert_late").set_value(2)
    at.selectbox(key="e_alert_late_unit").select("minutes")
    at.number_input(key="e_alert_running").set_value(8 * 24 * 60)  # 8 days: past the limit
    at.button(key="e_save").click()
    rerun_ok(at)
    assert any("needs consecutive_failures" in e for e in errors_by(at, "e_alert_recovery")), texts(at)
    assert any("required when a rule is set" in e for e in errors_by(at, "e_alert_channels")), texts(at)
    assert errors_by(at, "e_alert_running"), texts(at)
    assert not errors_by(at, "e_alert_late")
    assert "Not saved" not in texts(at), "each error by its field, none above the form"
    assert list_all_tasks(stub) == []
    # Channels without a rule: said of the policy as a whole, at the top of the section.
    made = channel(alerts, "ops")
    at.checkbox(key="e_alert_recovery").uncheck()
    at.number_input(key="e_alert_late").set_value(0)
    at.number_input(key="e_alert_running").set_value(0)
    rerun_ok(at)
    at.multiselect(key="e_alert_channels").set_value([made.id])
    at.button(key="e_save").click()
    rerun_ok(at)
    assert any("names channels but sets no rule" in e.value for e in at.error), texts(at)
    assert "Alerts would go to ops (webhook), but no rule is set" in texts(at)


def test_a_deleted_channel_shows_and_can_be_taken_out(api, stub, alerts, monkeypatch) -> None:
    gone, kept = channel(alerts, "old"), channel(alerts, "new")
    spec = cron_task("watched")
    spec.alerts.CopyFrom(pb.AlertPolicy(channel_ids=[gone.id, kept.id], consecutive_failures=1))
    task = create(stub, spec)
    alerts.DeleteChannel(pb.DeleteChannelRequest(id=gone.id))
    at = open_page(monkeypatch, api.target, EDIT, id=task.id)
    picker = at.multiselect(key="e_alert_channels")
    assert picker.value == [gone.id, kept.id]
    assert f"(no such channel) {gone.id}" in picker.options
    at.text_area(key="e_desc").input("still watched")
    at.button(key="e_save").click()
    rerun_ok(at)
    [said] = errors_by(at, "e_alert_channels")
    assert said == f"item 1: no channel {gone.id} in namespace 'default'", texts(at)
    at.multiselect(key="e_alert_channels").set_value([kept.id])
    at.button(key="e_save").click()
    rerun_ok(at)
    stored = get(stub, task.id)
    assert (stored.description, list(stored.alerts.channel_ids)) == ("still watched", [kept.id])


def test_the_task_list_says_a_picked_tasks_alerts_in_words(api, stub, alerts, monkeypatch) -> None:
    ops = channel(alerts, "ops")
    spec = cron_task("watched")
    spec.alerts.CopyFrom(pb.AlertPolicy(channel_ids=[ops.id], skipped=True))
    create(stub, spec)
    at = open_page(monkeypatch, api.target, "views/tasks.py")
    assert "Alerts go to ops (webhook) when occurrences are skipped." in texts(at)
