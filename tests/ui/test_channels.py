"""The Channels page against a real api and Redis: create (with a generated signing secret), send
a test to a local receiver, edit with the secrets kept, delete (asked first); errors by field,
the changed-meanwhile choice, and a viewer who only reads."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from schedcore import pb
from tests import alert_receiver
from tests.integration import helpers
from tests.integration.helpers import rpc_error
from tests.support import ServiceThread
from tests.ui import dash
from tests.ui.dash import open_page, rerun_ok, texts
from tests.ui.test_forms import column_with
from tests.ui.test_login import make_token, sign_in
from ui import channelform as cf

CHANNELS = "views/channels.py"
SLACK_URL = "https://hooks.slack.example.com/services/T000/B000/very-secret-part"
api = helpers.api
secured = dash.secured


@pytest.fixture()
def alerts(api: ServiceThread, rds) -> Iterator[pb.alert_service_grpc.AlertServiceStub]:  # type: ignore[no-untyped-def]
    """An AlertService client; Redis flushed before the test (by `rds`)."""
    with grpc.insecure_channel(api.target) as channel:
        yield pb.alert_service_grpc.AlertServiceStub(channel)


@pytest.fixture()
def receiver() -> Iterator[alert_receiver.Receiver]:
    found = alert_receiver.start()
    yield found
    found.close()


def listed(alerts) -> list[pb.Channel]:  # type: ignore[no-untyped-def]
    return list(alerts.ListChannels(pb.ListChannelsRequest()).channels)


def everything(at) -> str:  # type: ignore[no-untyped-def]
    """The page's texts and its tables' cells: where a secret must never be."""
    return texts(at) + "".join(frame.value.to_csv() for frame in at.dataframe)


def test_create_test_edit_and_delete_a_webhook(api, alerts, receiver, monkeypatch) -> None:
    at = open_page(monkeypatch, api.target, CHANNELS)
    assert "No channels yet. Create one below." in texts(at)
    at.text_input(key="ch_name").input("on-call")
    at.text_input(key="ch_url").input(f"{receiver.url}/hook")
    at.button(key="ch_generate").click()
    rerun_ok(at)
    [shown] = [c.value for c in at.code]
    assert shown.startswith("whsec_") and len(cf.signing.secret_key(shown)) == 32
    assert at.text_input(key="ch_secret_1").value == shown
    assert "shown only this once" in texts(at)
    at.button(key="ch_save").click()
    rerun_ok(at)
    assert "Created channel **on-call**" in texts(at)
    assert not at.code, "the secret is not shown again"
    [made] = listed(alerts)
    assert (made.name, made.namespace, made.webhook.url) == ("on-call", "default", f"{receiver.url}/hook")
    [row] = at.dataframe[0].value.to_dict("records")
    assert {k: row[k] for k in ("Name", "Namespace", "Kind", "Destination", "ID")} == {
        "Name": "on-call",
        "Namespace": "default",
        "Kind": "webhook",
        "Destination": f"{receiver.url}/hook",
        "ID": made.id,
    }
    assert shown not in everything(at)

    # The channel just made is picked: one click sends it a test, signed with the secret.
    assert at.selectbox(key="ch_pick").value == made.id
    at.button(key="ch_test").click()
    rerun_ok(at)
    assert "Delivered a test notification through **on-call**" in texts(at)
    [sent] = receiver.notifications()
    assert alert_receiver.verify(shown, sent.headers, sent.body)

    # Edit: the secret fields start empty and keep the stored secret.
    at.button(key="ch_edit").click()
    rerun_ok(at)
    assert at.subheader[0].value == "Edit on-call"
    assert at.text_input(key="ch_name").value == "on-call"
    assert at.text_input(key="ch_secret_1").value == ""
    assert at.text_input(key="ch_secret_1").placeholder == "stored: leave empty to keep it"
    at.text_input(key="ch_name").input("pager")
    at.button(key="ch_save").click()
    rerun_ok(at)
    assert "Saved channel **pager**" in texts(at)
    [renamed] = listed(alerts)
    assert (renamed.id, renamed.name, renamed.etag) == (made.id, "pager", "2")
    at.button(key="ch_test").click()
    rerun_ok(at)
    again = receiver.notifications()[-1]
    assert again.id != sent.id and alert_receiver.verify(shown, again.headers, again.body)

    # Delete asks first, naming the channel; Cancel keeps it.
    at.button(key="ch_delete").click()
    rerun_ok(at)
    assert "Delete channel **pager** (webhook, namespace default)?" in texts(at)
    at.button(key="ch_delete_no").click()
    rerun_ok(at)
    assert [c.id for c in listed(alerts)] == [made.id]
    at.button(key="ch_delete").click()
    rerun_ok(at)
    at.button(key="ch_delete_yes").click()
    rerun_ok(at)
    assert "Deleted channel **pager**" in texts(at)
    assert listed(alerts) == []
    rpc_error(lambda: alerts.GetChannel(pb.GetChannelRequest(id=made.id)), grpc.StatusCode.NOT_FOUND)


def test_a_refused_test_says_why(api, alerts, receiver, monkeypatch) -> None:
    alerts.CreateChannel(
        pb.CreateChannelRequest(
            channel=pb.Channel(
                name="flaky",
                webhook=pb.WebhookChannel(url=f"{receiver.url}/fail/5", signing_secrets=[cf.new_secret()]),
            )
        )
    )
    at = open_page(monkeypatch, api.target, CHANNELS)
    [channel] = listed(alerts)
    at.selectbox(key="ch_pick").select(channel.id)
    rerun_ok(at)
    at.button(key="ch_test").click()
    rerun_ok(at)
    assert "**flaky** did not take the test notification: http 503" in texts(at)


def test_slack_url_is_write_only_and_email_errors_land_by_their_field(api, alerts, monkeypatch) -> None:
    at = open_page(monkeypatch, api.target, CHANNELS)
    at.text_input(key="ch_name").input("chat")
    at.radio(key="ch_kind").set_value(cf.SLACK)
    rerun_ok(at)
    at.text_input(key="ch_slack").input(SLACK_URL)
    at.button(key="ch_save").click()
    rerun_ok(at)
    [chat] = listed(alerts)
    assert chat.WhichOneof("kind") == "slack" and chat.slack.webhook_url == ""  # never returned
    assert set(at.dataframe[0].value["Destination"]) == {"(the webhook URL is secret)"}
    assert "very-secret-part" not in everything(at)

    at.text_input(key="ch_name").input("mail")
    at.radio(key="ch_kind").set_value(cf.EMAIL)
    rerun_ok(at)
    at.text_area(key="ch_emails").input("ops@example.com\nnot an address\n")
    at.button(key="ch_save").click()
    rerun_ok(at)
    # Said by the field (not as a refusal above the form), naming the line.
    errors = [e.value for e in at.error]
    assert errors == ["item 2: must be an address of the form local@domain"], texts(at)
    assert len(listed(alerts)) == 1, "nothing created"
    at.text_area(key="ch_emails").input("ops@example.com\n\noncall@example.com")
    at.button(key="ch_save").click()
    rerun_ok(at)
    [mail] = [c for c in listed(alerts) if c.name == "mail"]
    assert list(mail.email.to) == ["ops@example.com", "oncall@example.com"]
    assert "ops@example.com, oncall@example.com" in set(at.dataframe[0].value["Destination"])

    # Edit the Slack channel: its URL field starts empty, and left empty keeps the stored one.
    at.selectbox(key="ch_pick").select(chat.id)
    rerun_ok(at)
    at.button(key="ch_edit").click()
    rerun_ok(at)
    assert at.radio(key="ch_kind").value == cf.SLACK and at.text_input(key="ch_slack").value == ""
    at.text_input(key="ch_name").input("")
    at.button(key="ch_save").click()
    rerun_ok(at)
    assert [e.value for e in column_with(at, "ch_name").error], texts(at)
    at.text_input(key="ch_name").input("chat room")
    at.button(key="ch_save").click()
    rerun_ok(at)
    assert "Saved channel **chat room**" in texts(at)


def test_a_channel_changed_meanwhile_asks_to_reload_or_overwrite(api, alerts, monkeypatch) -> None:
    made = alerts.CreateChannel(
        pb.CreateChannelRequest(channel=pb.Channel(name="ops", email=pb.EmailChannel(to=["a@example.com"])))
    ).channel
    at = open_page(monkeypatch, api.target, CHANNELS)
    at.selectbox(key="ch_pick").select(made.id)
    rerun_ok(at)
    at.button(key="ch_edit").click()
    rerun_ok(at)
    theirs = pb.Channel()
    theirs.CopyFrom(made)
    theirs.email.to.append("b@example.com")
    alerts.UpdateChannel(pb.UpdateChannelRequest(channel=theirs))
    at.text_input(key="ch_name").input("ops team")
    at.button(key="ch_save").click()
    rerun_ok(at)
    assert "this channel was changed by someone else" in "\n".join(e.value for e in at.error)
    assert at.text_input(key="ch_name").value == "ops team", "the edit stays in the form"
    assert listed(alerts)[0].name == "ops"
    at.button(key="ch_reload").click()
    rerun_ok(at)
    assert at.text_input(key="ch_name").value == "ops"
    assert at.text_area(key="ch_emails").value == "a@example.com\nb@example.com"
    # Again, overwriting this time.
    alerts.UpdateChannel(
        pb.UpdateChannelRequest(channel=pb.Channel(id=made.id, name="theirs", email=theirs.email))
    )
    at.text_input(key="ch_name").input("mine")
    at.button(key="ch_save").click()
    rerun_ok(at)
    at.button(key="ch_overwrite").click()
    rerun_ok(at)
    [stored] = listed(alerts)
    assert (stored.name, list(stored.email.to)) == ("mine", ["a@example.com", "b@example.com"])


def test_a_viewer_reads_channels_but_cannot_change_them(secured: ServiceThread, monkeypatch) -> None:
    with grpc.insecure_channel(secured.target) as channel:
        pb.alert_service_grpc.AlertServiceStub(channel).CreateChannel(
            pb.CreateChannelRequest(
                channel=pb.Channel(name="ops", email=pb.EmailChannel(to=["a@example.com"]))
            ),
            metadata=(("authorization", f"Bearer {dash.BOOTSTRAP}"),),
            timeout=10,
        )
    secret, _ = make_token(secured, pb.Role.ROLE_VIEWER, "vera")
    at = sign_in(open_page(monkeypatch, secured.target), secret)
    at.switch_page(CHANNELS).run()
    assert list(at.dataframe[0].value["Name"]) == ["ops"]
    at.selectbox(key="ch_pick").select_index(0)
    rerun_ok(at)
    for key in ("ch_edit", "ch_test", "ch_delete"):
        assert at.button(key=key).disabled, key
    assert "viewer role" in texts(at)
    assert not [b for b in at.button if b.key == "ch_save"]


def test_the_audit_trail_names_channel_changes(api, alerts, monkeypatch) -> None:
    made = alerts.CreateChannel(
        pb.CreateChannelRequest(channel=pb.Channel(name="old", email=pb.EmailChannel(to=["a@example.com"])))
    ).channel
    renamed = pb.Channel()
    renamed.CopyFrom(made)
    renamed.name = "older"
    alerts.UpdateChannel(pb.UpdateChannelRequest(channel=renamed))
    alerts.DeleteChannel(pb.DeleteChannelRequest(id=made.id))
    kept = alerts.CreateChannel(
        pb.CreateChannelRequest(channel=pb.Channel(name="kept", email=pb.EmailChannel(to=["b@example.com"])))
    ).channel
    at = open_page(monkeypatch, api.target, "views/audit.py")
    frame = at.dataframe[0].value
    assert [(r["Action"], r["Channel"]) for r in frame.to_dict("records")] == [
        ("created channel", f"kept (email) · {kept.id}"),
        ("deleted channel", f"(deleted) {made.id}"),
        ("updated channel", f"(deleted) {made.id}"),
        ("created channel", f"(deleted) {made.id}"),
    ]
