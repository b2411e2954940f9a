"""Sending one notification through one channel (docs/alerts.md, "Delivery"): a signed webhook,
a Slack-compatible incoming webhook, or email through the deployment's SMTP server.

Used by the scheduler's delivery loop and by the api's TestChannel. Outbound http goes through
the address policy (schedcore/egress.py), as http targets' calls do; a send never raises: it
returns why it failed, and whether trying again could help.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import urlencode

import httpx

from schedcore import pb, signing
from schedcore.egress import AddressRefused, GuardedTransport, proxy_mounts
from schedcore.netpolicy import AddressPolicy
from schedcore.settings import Settings
from schedcore.timeutil import ms_to_ts

# The `type` of a webhook body, by alert kind.
TYPES = {
    pb.AlertKind.ALERT_KIND_FAILING: "task.failing",
    pb.AlertKind.ALERT_KIND_RECOVERED: "task.recovered",
    pb.AlertKind.ALERT_KIND_SKIPPED: "task.skipped",
    pb.AlertKind.ALERT_KIND_LATE: "task.late",
    pb.AlertKind.ALERT_KIND_RUNNING_LONG: "task.running_long",
    pb.AlertKind.ALERT_KIND_TEST: "channel.test",
}
ERROR_CHARS = 300  # of a receiver's answer quoted in a notification's last_error
MAX_CONNECTIONS = 64


@dataclass(frozen=True)
class Alert:
    """What a notification says, whichever channel carries it."""

    id: str  # the notification id: webhook-id, Message-ID
    kind: int  # AlertKind
    task_id: str
    task_name: str
    namespace: str
    execution_id: str
    message: str
    raised_ms: int

    @property
    def type(self) -> str:
        return TYPES.get(self.kind, "task.alert")  # type: ignore[call-overload,no-any-return]

    def link(self, dashboard_url: str) -> str:
        if not dashboard_url or not self.execution_id:
            return ""
        return f"{dashboard_url.rstrip('/')}/executions?{urlencode({'id': self.execution_id})}"

    def headline(self) -> str:
        name = self.task_name or self.task_id
        return f"{self.type}: {name}" + (f" ({self.namespace})" if self.namespace else "")

    def body(self, dashboard_url: str) -> bytes:
        data = {
            "notification_id": self.id,
            "task": {"id": self.task_id, "name": self.task_name, "namespace": self.namespace},
            "execution_id": self.execution_id,
            "message": self.message,
        }
        link = self.link(dashboard_url)
        if link:
            data["link"] = link
        when = ms_to_ts(self.raised_ms).ToJsonString()
        return json.dumps(
            {"type": self.type, "timestamp": when, "data": data}, separators=(",", ":")
        ).encode()


@dataclass(frozen=True)
class Sent:
    """How a send went: error "" when the channel accepted it."""

    error: str = ""
    retryable: bool = True

    @property
    def ok(self) -> bool:
        return not self.error


class Sender:
    """The outbound side of alerts, one per process: an http client under the address policy
    and the SMTP settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeout_s = settings.alert_timeout_s
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
        policy = AddressPolicy.from_settings(settings)
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=self.timeout_s,
            transport=GuardedTransport(policy, limits),
            mounts=proxy_mounts(policy, limits),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(self, channel: pb.Channel, alert: Alert) -> Sent:
        """Send `alert` through `channel` (its secrets in the clear)."""
        kind = channel.WhichOneof("kind")
        try:
            if kind == "webhook":
                return await self._webhook(channel.webhook, alert)
            if kind == "slack":
                return await self._slack(channel.slack, alert)
            if kind == "email":
                return await asyncio.wait_for(
                    asyncio.to_thread(self._email, channel.email, alert), self.timeout_s
                )
        except httpx.ConnectError as exc:  # the guard's refusal arrives wrapped by httpx
            if isinstance(exc.__cause__, AddressRefused):
                return Sent(f"refused by the address policy: {exc}", retryable=False)
            return Sent(f"ConnectError: {exc}"[:ERROR_CHARS])
        except httpx.HTTPError as exc:
            return Sent(f"{type(exc).__name__}: {exc}"[:ERROR_CHARS] or type(exc).__name__)
        except (OSError, smtplib.SMTPException, TimeoutError) as exc:
            return Sent(f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])
        return Sent(f"channel has no kind ({kind})", retryable=False)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Sent:
        response = await self.client.post(
            url, content=body, headers={"content-type": "application/json", **headers}
        )
        if 200 <= response.status_code < 300:
            return Sent()
        excerpt = response.text[:ERROR_CHARS].strip()
        return Sent(f"http {response.status_code}" + (f": {excerpt}" if excerpt else ""))

    async def _webhook(self, webhook: pb.WebhookChannel, alert: Alert) -> Sent:
        body = alert.body(self.settings.dashboard_url)
        headers = signing.signature_headers(list(webhook.signing_secrets), alert.id, int(time.time()), body)
        return await self._post(webhook.url, body, headers)

    async def _slack(self, slack: pb.SlackChannel, alert: Alert) -> Sent:
        link = alert.link(self.settings.dashboard_url)
        text = f"*{alert.headline()}*\n{alert.message}" + (f"\n<{link}|{alert.execution_id}>" if link else "")
        return await self._post(slack.webhook_url, json.dumps({"text": text}).encode(), {})

    def _email(self, email: pb.EmailChannel, alert: Alert) -> Sent:
        s = self.settings
        if not s.smtp_host:
            return Sent("no SMTP server: set SMTP_HOST", retryable=False)
        mail = EmailMessage()
        mail["Subject"] = f"[tasksched] {alert.headline()}"
        mail["From"] = s.smtp_from
        mail["To"] = ", ".join(email.to)
        mail["Message-ID"] = f"<{alert.id}@tasksched>"
        link = alert.link(s.dashboard_url)
        mail.set_content(
            f"{alert.message}\n\ntask: {alert.task_id}\nexecution: {alert.execution_id}\n"
            + (f"{link}\n" if link else "")
        )
        context = ssl.create_default_context()
        smtp = (
            smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=self.timeout_s, context=context)
            if s.smtp_tls
            else smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=self.timeout_s)
        )
        with smtp:
            if s.smtp_starttls and not s.smtp_tls:
                smtp.starttls(context=context)
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password)
            refused = smtp.send_message(mail)
        if refused:
            return Sent(f"recipients refused: {', '.join(sorted(refused))}"[:ERROR_CHARS])
        return Sent()
