"""AlertService's channels against a real api (AUTH_MODE=token, SECRET_KEYS set) on a real Redis:
create, read, list, change and delete, etags, unique names, write-only secrets sealed at rest,
namespaces, validation (docs/alerts.md)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator

import grpc
import pytest
import redis

from schedcore import pb
from schedcore.sealing import Sealer, new_key, unseal_channel
from schedcore.store.keys import Keys, channel_member
from tests import alert_receiver
from tests.integration.auth_support import EDITOR, VIEWER, AuthApi, Caller, start_auth_api
from tests.integration.helpers import invalid, rpc_error, stop_service
from tests.support import RedisServer

KEY = new_key()
KEYS = Keys()
A = pb.AuditAction


def whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


SECRET_1, SECRET_2 = whsec(), whsec()
SLACK_URL = "https://hooks.slack.example.com/services/T000/B000/" + secrets.token_hex(12)


def webhook(name: str = "hook", *signing: str, namespace: str = "") -> pb.Channel:
    return pb.Channel(
        name=name,
        namespace=namespace,
        webhook=pb.WebhookChannel(
            url="https://receiver.example.com/alerts", signing_secrets=signing or [SECRET_1]
        ),
    )


def email(name: str = "mail", namespace: str = "", *to: str) -> pb.Channel:
    return pb.Channel(name=name, namespace=namespace, email=pb.EmailChannel(to=to or ["ops@example.com"]))


@pytest.fixture()
def sealed_api(redis_srv: RedisServer, rds: redis.Redis) -> Iterator[AuthApi]:
    """An api requiring tokens that seals secrets with KEY, on a flushed Redis."""
    service = start_auth_api(redis_srv, secret_keys=(KEY,))
    with grpc.insecure_channel(service.target) as channel:
        yield AuthApi(service, channel)
    stop_service(service)


def create(caller: Caller, channel: pb.Channel) -> pb.Channel:
    return caller.alerts.CreateChannel(pb.CreateChannelRequest(channel=channel)).channel  # type: ignore[no-any-return]


def get(caller: Caller, channel_id: str) -> pb.Channel:
    return caller.alerts.GetChannel(pb.GetChannelRequest(id=channel_id)).channel  # type: ignore[no-any-return]


def update(caller: Caller, channel: pb.Channel) -> pb.Channel:
    return caller.alerts.UpdateChannel(pb.UpdateChannelRequest(channel=channel)).channel  # type: ignore[no-any-return]


def test_create_get_list_update_delete_with_etags_and_audit(sealed_api: AuthApi, rds: redis.Redis) -> None:
    admin = sealed_api.admin
    made = create(admin, webhook("on-call"))
    assert len(made.id) == 16 and made.etag == "1"
    assert (made.name, made.namespace) == ("on-call", "default")
    assert made.create_time == made.update_time and made.create_time.seconds > 0
    assert get(admin, made.id) == made
    assert list(admin.alerts.ListChannels(pb.ListChannelsRequest()).channels) == [made]
    assert rds.zrange(KEYS.channels, 0, -1) == [channel_member("default", "on-call", made.id).encode()]

    renamed = pb.Channel()
    renamed.CopyFrom(made)
    renamed.name = "pager"
    changed = update(admin, renamed)
    assert (changed.name, changed.etag, changed.create_time) == ("pager", "2", made.create_time)
    assert rds.zrange(KEYS.channels, 0, -1) == [channel_member("default", "pager", made.id).encode()]
    # The etag read before the rename is stale now, for an update and for a delete.
    err = rpc_error(lambda: update(admin, made), grpc.StatusCode.ABORTED)
    assert "etag 1 is stale" in (err.details() or "")
    rpc_error(
        lambda: admin.alerts.DeleteChannel(pb.DeleteChannelRequest(id=made.id, etag="1")),
        grpc.StatusCode.ABORTED,
    )
    admin.alerts.DeleteChannel(pb.DeleteChannelRequest(id=made.id, etag="2"))
    rpc_error(lambda: get(admin, made.id), grpc.StatusCode.NOT_FOUND)
    rpc_error(
        lambda: admin.alerts.DeleteChannel(pb.DeleteChannelRequest(id=made.id)), grpc.StatusCode.NOT_FOUND
    )
    assert rds.exists(KEYS.channel(made.id)) == 0 and rds.zcard(KEYS.channels) == 0

    events = admin.audit.ListAuditEvents(pb.ListAuditEventsRequest()).events
    channel_events = [(e.action, e.channel_id, e.namespace) for e in events if e.channel_id]
    assert channel_events == [
        (A.AUDIT_ACTION_DELETE_CHANNEL, made.id, "default"),
        (A.AUDIT_ACTION_UPDATE_CHANNEL, made.id, "default"),
        (A.AUDIT_ACTION_CREATE_CHANNEL, made.id, "default"),
    ]


def test_names_are_unique_per_namespace(sealed_api: AuthApi) -> None:
    admin = sealed_api.admin
    first = create(admin, email("ops"))
    err = rpc_error(lambda: create(admin, email("ops")), grpc.StatusCode.ALREADY_EXISTS)
    assert first.id in (err.details() or "")
    other_ns = create(admin, email("ops", "team-b"))  # another namespace may use the name
    second = create(admin, email("ops 2"))
    taken = pb.Channel()
    taken.CopyFrom(second)
    taken.name = "ops"
    rpc_error(lambda: update(admin, taken), grpc.StatusCode.ALREADY_EXISTS)
    # A rename frees the old name.
    moved = pb.Channel()
    moved.CopyFrom(first)
    moved.name = "ops old"
    update(admin, moved)
    assert create(admin, email("ops")).name == "ops"
    assert other_ns.namespace == "team-b"


def test_secrets_are_write_only_and_sealed_at_rest(sealed_api: AuthApi, rds: redis.Redis) -> None:
    admin = sealed_api.admin
    hook = create(admin, webhook("signed", SECRET_1, SECRET_2))
    slack = create(admin, pb.Channel(name="chat", slack=pb.SlackChannel(webhook_url=SLACK_URL)))
    # Every response carries them empty (one empty string per signing secret).
    for channel in (hook, get(admin, hook.id), *admin.alerts.ListChannels(pb.ListChannelsRequest()).channels):
        assert channel.slack.webhook_url == "" and set(channel.webhook.signing_secrets) <= {""}
    assert list(hook.webhook.signing_secrets) == ["", ""]
    assert hook.webhook.url == "https://receiver.example.com/alerts"  # the URL is not secret
    # In Redis: sealed, the plaintext nowhere.
    for key in rds.keys("*"):
        if rds.type(key) == b"hash":
            raw = b"".join(k + v for k, v in rds.hgetall(key).items())
            for plain in (SECRET_1, SECRET_2, SLACK_URL):
                assert plain.encode() not in raw, key
    stored = pb.Channel.FromString(rds.hget(KEYS.channel(hook.id), "pb"))
    assert all(s.startswith("sealed:v1:") for s in stored.webhook.signing_secrets)
    # What the engine will call to send: the secrets in the clear again.
    opened = unseal_channel(pb.Channel.FromString(rds.hget(KEYS.channel(slack.id), "pb")), Sealer([KEY]))
    assert opened.slack.webhook_url == SLACK_URL
    assert list(unseal_channel(stored, Sealer([KEY])).webhook.signing_secrets) == [SECRET_1, SECRET_2]

    # UpdateChannel: an empty value keeps the stored secret at its position, a new one replaces,
    # secrets past the end of the list sent are removed.
    new_secret = whsec()
    resend = pb.WebhookChannel(url=hook.webhook.url, signing_secrets=["", new_secret])
    kept = update(admin, pb.Channel(id=hook.id, name="signed", webhook=resend))
    assert kept.etag == "2"
    stored = pb.Channel.FromString(rds.hget(KEYS.channel(hook.id), "pb"))
    assert list(unseal_channel(stored, Sealer([KEY])).webhook.signing_secrets) == [SECRET_1, new_secret]
    update(
        admin,
        pb.Channel(
            id=hook.id, name="signed", webhook=pb.WebhookChannel(url=hook.webhook.url, signing_secrets=[""])
        ),
    )
    stored = pb.Channel.FromString(rds.hget(KEYS.channel(hook.id), "pb"))
    assert list(unseal_channel(stored, Sealer([KEY])).webhook.signing_secrets) == [SECRET_1]
    update(admin, pb.Channel(id=slack.id, name="chat 2", slack=pb.SlackChannel()))
    stored = pb.Channel.FromString(rds.hget(KEYS.channel(slack.id), "pb"))
    assert unseal_channel(stored, Sealer([KEY])).slack.webhook_url == SLACK_URL
    # A client may not send a value that looks sealed (only the api seals).
    invalid(
        lambda: update(
            admin, pb.Channel(id=slack.id, name="chat", slack=pb.SlackChannel(webhook_url="sealed:v1:x"))
        ),
        "channel.slack.webhook_url",
    )


def test_a_namespace_token_sees_and_changes_only_its_channels(sealed_api: AuthApi) -> None:
    admin = sealed_api.admin
    _, a_secret = admin.new_token("team a", EDITOR, namespace="team-a")
    _, b_secret = admin.new_token("team b", VIEWER, namespace="team-b")
    team_a, team_b = admin.as_token(a_secret), admin.as_token(b_secret)
    mine = create(team_a, email("a mail"))
    assert mine.namespace == "team-a"  # the token's namespace by default
    theirs = create(admin, email("b mail", "team-b"))
    create(admin, email("default mail"))
    rpc_error(lambda: create(team_a, email("elsewhere", "team-b")), grpc.StatusCode.PERMISSION_DENIED)
    rpc_error(lambda: get(team_a, theirs.id), grpc.StatusCode.PERMISSION_DENIED)
    rpc_error(lambda: update(team_a, theirs), grpc.StatusCode.PERMISSION_DENIED)
    rpc_error(
        lambda: team_a.alerts.DeleteChannel(pb.DeleteChannelRequest(id=theirs.id)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    rpc_error(
        lambda: team_a.alerts.TestChannel(pb.TestChannelRequest(id=theirs.id)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    listed = team_a.alerts.ListChannels(pb.ListChannelsRequest()).channels
    assert [c.id for c in listed] == [mine.id]
    assert [c.id for c in team_b.alerts.ListChannels(pb.ListChannelsRequest()).channels] == [theirs.id]
    rpc_error(
        lambda: team_b.alerts.ListChannels(pb.ListChannelsRequest(namespace="team-a")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    every = admin.alerts.ListChannels(pb.ListChannelsRequest()).channels
    assert [(c.namespace, c.name) for c in every] == [
        ("default", "default mail"),
        ("team-a", "a mail"),
        ("team-b", "b mail"),
    ]
    only_b = admin.alerts.ListChannels(pb.ListChannelsRequest(namespace="team-b")).channels
    assert [c.id for c in only_b] == [theirs.id]
    # The namespace is fixed at creation.
    moved = pb.Channel()
    moved.CopyFrom(mine)
    moved.namespace = "team-b"
    invalid(lambda: update(admin, moved), "channel.namespace")


def test_list_channels_pages_by_namespace_and_name(sealed_api: AuthApi) -> None:
    admin = sealed_api.admin
    names = [f"c{i:02d}" for i in range(7)]
    for name in reversed(names):
        create(admin, email(name, "team-a"))
    create(admin, email("z", "team-b"))
    seen, token = [], ""
    while True:
        reply = admin.alerts.ListChannels(
            pb.ListChannelsRequest(namespace="team-a", page_size=3, page_token=token)
        )
        seen += [c.name for c in reply.channels]
        token = reply.next_page_token
        if not token:
            break
    assert seen == names
    first = admin.alerts.ListChannels(pb.ListChannelsRequest(namespace="team-a", page_size=3))
    invalid(
        lambda: admin.alerts.ListChannels(
            pb.ListChannelsRequest(namespace="team-b", page_token=first.next_page_token)
        ),
        "page_token",
    )


def test_test_channel_sends_a_signed_test_notification_through_the_stored_secret(sealed_api: AuthApi) -> None:
    """The api opens the sealed secret and signs with it; a channel that answers no gets its
    error back; a channel without SMTP_HOST says so."""
    admin = sealed_api.admin
    receiver = alert_receiver.start()
    try:
        hook = webhook("probe")
        hook.webhook.url = f"{receiver.url}/hook"
        channel = create(admin, hook)
        reply = admin.alerts.TestChannel(pb.TestChannelRequest(id=channel.id))
        assert (reply.delivered, reply.error) == (True, "")
        [sent] = receiver.notifications()
        assert alert_receiver.verify(SECRET_1, sent.headers, sent.body)
        assert (
            sent.json["type"] == "channel.test"
            and sent.id.startswith("test.")
            and sent.id.endswith(channel.id)
        )
        assert sent.json["data"]["message"].startswith("a test notification through channel probe, sent by ")
        refused = webhook("refusing")
        refused.webhook.url = f"{receiver.url}/fail/5"
        reply = admin.alerts.TestChannel(pb.TestChannelRequest(id=create(admin, refused).id))
        assert (reply.delivered, reply.error) == (False, "http 503: {}")
        reply = admin.alerts.TestChannel(pb.TestChannelRequest(id=create(admin, email()).id))
        assert (reply.delivered, reply.error) == (False, "no SMTP server: set SMTP_HOST")
    finally:
        receiver.close()
    invalid(lambda: admin.alerts.TestChannel(pb.TestChannelRequest(id="nope")), "id")
    rpc_error(
        lambda: admin.alerts.TestChannel(pb.TestChannelRequest(id="0123456789abcdef")),
        grpc.StatusCode.NOT_FOUND,
    )


BAD_CHANNELS = [
    ("channel.name", pb.Channel(name=" ", email=pb.EmailChannel(to=["a@b.example"]))),
    ("channel.name", pb.Channel(name="x" * 201, email=pb.EmailChannel(to=["a@b.example"]))),
    ("channel.namespace", email("n", "Team A")),
    ("channel", pb.Channel(name="no kind")),
    ("channel.webhook.url", pb.Channel(name="w", webhook=pb.WebhookChannel(signing_secrets=[SECRET_1]))),
    (
        "channel.webhook.url",
        pb.Channel(name="w", webhook=pb.WebhookChannel(url="ftp://x.example", signing_secrets=[SECRET_1])),
    ),
    (
        "channel.webhook.url",
        pb.Channel(
            name="w",
            webhook=pb.WebhookChannel(url="https://x.example/?token=abc", signing_secrets=[SECRET_1]),
        ),
    ),
    # The egress address policy, on a literal address (the api's default denies link-local metadata).
    (
        "channel.webhook.url",
        pb.Channel(
            name="w", webhook=pb.WebhookChannel(url="http://169.254.169.254/", signing_secrets=[SECRET_1])
        ),
    ),
    (
        "channel.webhook.signing_secrets",
        pb.Channel(name="w", webhook=pb.WebhookChannel(url="https://x.example")),
    ),
    ("channel.webhook.signing_secrets", webhook("w", SECRET_1, SECRET_2, whsec())),
    ("channel.webhook.signing_secrets[1]", webhook("w", SECRET_1, "whsec_short")),
    ("channel.slack.webhook_url", pb.Channel(name="s", slack=pb.SlackChannel())),
    (
        "channel.slack.webhook_url",
        pb.Channel(name="s", slack=pb.SlackChannel(webhook_url="ftp://hooks.example.com/x")),
    ),
    ("channel.email.to", pb.Channel(name="e", email=pb.EmailChannel())),
    ("channel.email.to", email("e", "", *[f"u{i}@example.com" for i in range(21)])),
    ("channel.email.to[1]", email("e", "", "ok@example.com", "not an address")),
    ("channel.email.to[1]", email("e", "", "ok@example.com", "Ops <ops@example.com>")),
    ("channel.email.to[1]", email("e", "", "ok@example.com", "OK@example.com")),
]


@pytest.mark.parametrize(
    ("field", "channel"), BAD_CHANNELS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_CHANNELS)]
)
def test_validation_names_the_field(
    sealed_api: AuthApi, rds: redis.Redis, field: str, channel: pb.Channel
) -> None:
    err = invalid(lambda: create(sealed_api.admin, channel), field)
    assert SECRET_1 not in (err.details() or "")
    assert rds.zcard(KEYS.channels) == 0
