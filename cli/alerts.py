"""Notification channels and notifications (AlertService, docs/alerts.md): channels
create|list|get|update|delete, and `alerts list TASK`.

A channel's secrets (a webhook's signing secrets, a Slack webhook's URL) never come back from the
api: `update` sends them back empty, which keeps them, unless new ones are given. `--secret @FILE`
and `--slack @FILE` read the value from a file, out of shell history and process listings."""

from __future__ import annotations

import argparse

from cli import output
from cli.access import paging
from cli.client import Client
from cli.errors import LocalFailure, UsageError
from cli.taskflags import secret
from schedcore import pb
from schedcore.sealing import destination

CHANNEL_HEADERS = ("ID", "NAME", "NAMESPACE", "KIND", "TO", "UPDATED")
NOTIFICATION_HEADERS = ("TIME", "KIND", "CHANNEL", "STATE", "ATTEMPTS", "MESSAGE / LAST ERROR")


def show(channel: pb.Channel, args: argparse.Namespace) -> None:
    if args.output == "json":
        output.print_json(output.to_json(channel))
        return
    rows = [
        ("id", channel.id),
        ("name", channel.name),
        ("namespace", channel.namespace),
        ("kind", channel.WhichOneof("kind") or "-"),
        ("to", destination(channel)),
    ]
    rows += [("  signing secret", "(secret)") for _ in channel.webhook.signing_secrets]
    rows += [
        ("created", output.when(channel.create_time)),
        ("updated", output.when(channel.update_time)),
        ("etag", channel.etag),
    ]
    output.details(rows)


def _apply(args: argparse.Namespace, channel: pb.Channel) -> bool:
    """Apply the flags given; whether any was."""
    kinds = [flag for flag in ("webhook", "slack", "email") if getattr(args, flag)]
    if len(kinds) > 1:
        raise UsageError("--webhook, --slack and --email: give one of them")
    if args.secret and not (args.webhook or channel.WhichOneof("kind") == "webhook"):
        raise UsageError("--secret needs a webhook channel (--webhook URL)")
    if args.name is not None:
        channel.name = args.name
    if args.webhook:
        kept = channel.webhook if channel.WhichOneof("kind") == "webhook" else pb.WebhookChannel()
        channel.webhook.CopyFrom(pb.WebhookChannel(url=args.webhook, signing_secrets=kept.signing_secrets))
    if args.secret:  # the ones given replace the stored ones
        del channel.webhook.signing_secrets[:]
        channel.webhook.signing_secrets.extend(secret("--secret", s, "a signing secret") for s in args.secret)
    if args.slack:
        channel.slack.webhook_url = secret("--slack", args.slack, "the webhook URL")
    if args.email:
        channel.email.CopyFrom(pb.EmailChannel(to=args.email))
    return bool(kinds or args.secret or args.name is not None)


def create(client: Client, args: argparse.Namespace) -> None:
    channel = pb.Channel(namespace=args.namespace or "")
    _apply(args, channel)
    if channel.WhichOneof("kind") is None:
        raise UsageError(
            "a kind is required: --webhook URL --secret whsec_..., --slack URL or --email ADDRESS"
        )
    reply = client.call(client.alerts.CreateChannel, pb.CreateChannelRequest(channel=channel))
    show(reply.channel, args)


def list_channels(client: Client, args: argparse.Namespace) -> None:
    request = pb.ListChannelsRequest(namespace=args.namespace or "", page_token=args.page_token or "")
    found, more = client.pages(
        client.alerts.ListChannels, request, "channels", None if args.all else args.limit
    )
    rows = [
        (
            c.id,
            output.short(c.name, 40),
            c.namespace,
            c.WhichOneof("kind") or "-",
            output.short(destination(c), 50),
            output.when(c.update_time),
        )
        for c in found
    ]
    output.listing(args.output, "channels", found, more, CHANNEL_HEADERS, rows)


def get(client: Client, args: argparse.Namespace) -> None:
    show(client.call(client.alerts.GetChannel, pb.GetChannelRequest(id=args.id)).channel, args)


def update(client: Client, args: argparse.Namespace) -> None:
    """Read the channel, apply the flags, write it back: the etag read (or the one given) makes
    the write fail with ABORTED if the channel changed meanwhile."""
    channel = client.call(client.alerts.GetChannel, pb.GetChannelRequest(id=args.id)).channel
    if not _apply(args, channel):
        raise UsageError("nothing to update: give --name, --webhook, --secret, --slack or --email")
    if args.etag:
        channel.etag = args.etag
    show(client.call(client.alerts.UpdateChannel, pb.UpdateChannelRequest(channel=channel)).channel, args)


def delete(client: Client, args: argparse.Namespace) -> None:
    client.call(client.alerts.DeleteChannel, pb.DeleteChannelRequest(id=args.id, etag=args.etag or ""))
    if args.output == "json":
        output.print_json({"id": args.id, "deleted": True})
    else:
        print(f"deleted {args.id}")


def test(client: Client, args: argparse.Namespace) -> None:
    """Send a test notification now: `delivered`, or exit 1 with why the channel did not take it."""
    reply = client.call(client.alerts.TestChannel, pb.TestChannelRequest(id=args.id))
    if args.output == "json":
        output.print_json({"id": args.id, "delivered": reply.delivered, "error": reply.error})
    elif reply.delivered:
        print(f"delivered a test notification through {args.id}")
    if not reply.delivered:
        raise LocalFailure(f"channel {args.id} did not take the test notification: {reply.error}")


def _name(enum: type, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower() if value in enum.values() else str(value)  # type: ignore[attr-defined]


def list_notifications(client: Client, args: argparse.Namespace) -> None:
    request = pb.ListNotificationsRequest(task_id=args.task, page_token=args.page_token or "")
    found, more = client.pages(
        client.alerts.ListNotifications, request, "notifications", None if args.all else args.limit
    )
    rows = [
        (
            output.when(n.create_time),
            _name(pb.AlertKind, n.kind, "ALERT_KIND_").replace("_", "-"),
            n.channel_id,
            _name(pb.NotificationState, n.state, "NOTIFICATION_STATE_"),
            str(n.attempts),
            output.short(n.message + (f" ({n.last_error})" if n.last_error else ""), 80),
        )
        for n in found
    ]
    output.listing(args.output, "notifications", found, more, NOTIFICATION_HEADERS, rows)


def _channel_flags(p: argparse.ArgumentParser, *, update: bool) -> None:
    p.add_argument("--name", required=not update, help="1-200 characters, unique in the namespace")
    p.add_argument("--webhook", metavar="URL", help="POST each alert as JSON, signed (Standard Webhooks)")
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="whsec_...|@FILE",
        help="--webhook: a signing secret; 1 or 2 (rotation); write-only"
        + ("; the ones given replace the stored ones" if update else ""),
    )
    p.add_argument(
        "--slack", metavar="URL|@FILE", help="a Slack-compatible incoming webhook (https); write-only"
    )
    p.add_argument(
        "--email", action="append", default=[], metavar="ADDRESS", help="mail to; repeatable, at most 20"
    )


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("channels", parents=[common], help="where alerts go: webhooks, Slack, email")
    subs = p.add_subparsers(
        dest="channels_command", metavar="{create,list,get,update,delete,test}", required=True
    )

    q = subs.add_parser("create", parents=[common], help="create a channel (editor)")
    _channel_flags(q, update=False)
    q.add_argument("--namespace", help="the channel's namespace (default: the token's, or default)")
    q.set_defaults(func=create)

    q = subs.add_parser("list", parents=[common], help="list channels by namespace and name")
    q.add_argument("--namespace", help="only channels of this namespace")
    paging(q)
    q.set_defaults(func=list_channels)

    q = subs.add_parser("get", parents=[common], help="show a channel (never its secrets)")
    q.add_argument("id")
    q.set_defaults(func=get)

    q = subs.add_parser("update", parents=[common], help="change a channel (editor)")
    q.add_argument("id")
    q.add_argument(
        "--etag", help="fail with ABORTED if the channel changed since this etag (default: the one read)"
    )
    _channel_flags(q, update=True)
    q.set_defaults(func=update)

    q = subs.add_parser("delete", parents=[common], help="delete a channel (editor)")
    q.add_argument("id")
    q.add_argument("--etag", help="fail with ABORTED if the channel changed since this etag")
    q.set_defaults(func=delete)

    q = subs.add_parser(
        "test", parents=[common], help="send a test notification through a channel now (editor)"
    )
    q.add_argument("id")
    q.set_defaults(func=test)

    p = sub.add_parser("alerts", parents=[common], help="the notifications sent about a task")
    subs = p.add_subparsers(dest="alerts_command", metavar="{list}", required=True)
    q = subs.add_parser("list", parents=[common], help="a task's notifications, newest first")
    q.add_argument("task", metavar="TASK", help="the task's id")
    paging(q)
    q.set_defaults(func=list_notifications)
