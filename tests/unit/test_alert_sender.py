"""schedcore/alerting.py's Sender: the address policy refuses a channel's URL for good (no retry
can help), a port where nothing listens is worth another try, and email without SMTP_HOST says
what to set. No Redis: the sender only sends."""

from __future__ import annotations

import asyncio

from schedcore import pb
from schedcore.alerting import Alert, Sender, Sent
from schedcore.settings import Settings
from tests.support import free_port

ALERT = Alert("failing.0123456789abcdef-1765166400000.c1", 1, "0123456789abcdef", "t", "default", "e", "m", 0)


def send(settings: Settings, channel: pb.Channel) -> Sent:
    async def main() -> Sent:
        sender = Sender(settings)
        try:
            return await sender.send(channel, ALERT)
        finally:
            await sender.aclose()

    return asyncio.run(main())


def hook(url: str) -> pb.Channel:
    return pb.Channel(webhook=pb.WebhookChannel(url=url, signing_secrets=["whsec_" + "A" * 32]))


def test_a_refused_address_is_not_retried_and_a_closed_port_is() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    refused = send(Settings(http_deny_private=True), hook(url))
    assert not refused.ok and not refused.retryable
    assert refused.error.startswith("refused by the address policy: ")
    closed = send(Settings(), hook(url))
    assert not closed.ok and closed.retryable and closed.error.startswith("ConnectError")


def test_email_without_an_smtp_server_names_the_setting() -> None:
    sent = send(Settings(), pb.Channel(email=pb.EmailChannel(to=["a@example.com"])))
    assert (sent.ok, sent.retryable, sent.error) == (False, False, "no SMTP server: set SMTP_HOST")
