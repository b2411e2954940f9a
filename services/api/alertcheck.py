"""Validation of what alerts are made of (docs/alerts.md): a notification channel (AlertService)
and a task's AlertPolicy (`Task.alerts`). Each problem is a FieldViolation naming its field
(`channel.webhook.url`, `task.alerts.channel_ids[2]`); messages never quote a secret.

A channel's webhook URL is checked as an http target's is (form, no credentials, the egress
address policy on a literal address): the scheduler calls it as an executor calls a target. A
Slack webhook's URL is the credential itself (sealed, never shown), so it may carry one, but it
must be https. An email address is checked for its form only, `local@domain`: a local part of
1-64 characters without spaces, quotes, brackets, commas, semicolons or colons, and a domain of
dot-separated labels of letters, digits and hyphens; whether it receives mail is the SMTP
server's to say.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from google.protobuf.duration_pb2 import Duration

from schedcore import pb, signing
from schedcore.errors import Violations
from schedcore.netpolicy import AddressPolicy
from schedcore.store.channels import ChannelStore
from schedcore.store.keys import CHANNEL_ID, DEFAULT_NAMESPACE
from services.api.schedulecheck import duration_ms
from services.api.urlcheck import url_problem

MAX_CHANNEL_NAME = 200
MAX_EMAILS = 20
MAX_TASK_CHANNELS = 5
MAX_CONSECUTIVE_FAILURES = 1000
MAX_LATE_START_MS = 24 * 3600 * 1000
MAX_RUNNING_MS = 7 * 24 * 3600 * 1000
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL = re.compile(rf"^[^\s@<>()\[\]\\,;:\"]{{1,64}}@{_LABEL}(?:\.{_LABEL})*$")
MAX_EMAIL = 254
WEBHOOK_CREDENTIALS = (
    "the URL is shown to every viewer: let the receiver check the request's signature "
    "(signing_secrets) instead"
)


def channel_kind(
    v: Violations, channel_in: pb.Channel, out: pb.Channel, addresses: AddressPolicy | None
) -> None:
    """Set `out`'s kind (webhook, slack or email) from `channel_in`'s, normalized (URLs and
    addresses stripped); secrets in the clear. The name and namespace are the caller's to check
    (services/api/validation.py, as for every resource)."""
    kind = channel_in.WhichOneof("kind")
    if kind is None:
        v.add("channel", "required: set webhook, slack or email")
    elif kind == "webhook":
        out.webhook.CopyFrom(_webhook(v, channel_in.webhook, addresses))
    elif kind == "slack":
        out.slack.webhook_url = _url(
            v, "channel.slack.webhook_url", channel_in.slack.webhook_url, addresses, credentials=None
        )
    else:
        out.email.CopyFrom(_email(v, channel_in.email))


def _url(
    v: Violations, path: str, raw: str, addresses: AddressPolicy | None, *, credentials: str | None
) -> str:
    url = raw.strip()
    if not url:
        v.add(path, "required")
    elif (problem := url_problem(url, addresses, credentials=credentials)) is not None:
        v.add(path, problem)
    return url


def _webhook(v: Violations, webhook: pb.WebhookChannel, addresses: AddressPolicy | None) -> pb.WebhookChannel:
    path = "channel.webhook"
    out = pb.WebhookChannel(
        url=_url(v, f"{path}.url", webhook.url, addresses, credentials=WEBHOOK_CREDENTIALS)
    )
    secrets = list(webhook.signing_secrets)
    if not 1 <= len(secrets) <= signing.MAX_SECRETS:
        v.add(f"{path}.signing_secrets", f"1 to {signing.MAX_SECRETS} secrets (two while a receiver rotates)")
    for i, secret in enumerate(secrets):
        try:
            signing.secret_key(secret)
        except ValueError as exc:
            v.add(f"{path}.signing_secrets[{i}]", str(exc))
    out.signing_secrets.extend(secrets)
    return out


def _email(v: Violations, email: pb.EmailChannel) -> pb.EmailChannel:
    path = "channel.email.to"
    addresses = [a.strip() for a in email.to]
    if not 1 <= len(addresses) <= MAX_EMAILS:
        v.add(path, f"1 to {MAX_EMAILS} addresses")
    for i, address in enumerate(addresses):
        if len(address) > MAX_EMAIL or not EMAIL.match(address):
            v.add(f"{path}[{i}]", "must be an address of the form local@domain")
        elif address.lower() in (a.lower() for a in addresses[:i]):
            v.add(f"{path}[{i}]", "named twice")
    return pb.EmailChannel(to=addresses)


# --- Task.alerts ---------------------------------------------------------------------------------


def policy(v: Violations, alerts: pb.AlertPolicy, path: str = "task.alerts") -> pb.AlertPolicy:
    """A task's alert policy, normalized (zero durations left unset). Which channels exist is
    checked by `channels_exist`, against the store."""
    out = pb.AlertPolicy(recovery=alerts.recovery, skipped=alerts.skipped)
    ids = list(alerts.channel_ids)
    if len(ids) > MAX_TASK_CHANNELS:
        v.add(f"{path}.channel_ids", f"at most {MAX_TASK_CHANNELS} channels")
    for i, channel_id in enumerate(ids):
        if not CHANNEL_ID.match(channel_id):
            v.add(f"{path}.channel_ids[{i}]", "malformed channel id (expected 16 lowercase hex characters)")
        elif channel_id in ids[:i]:
            v.add(f"{path}.channel_ids[{i}]", f"repeats channel_ids[{ids.index(channel_id)}]")
    out.channel_ids.extend(ids)
    if not 0 <= alerts.consecutive_failures <= MAX_CONSECUTIVE_FAILURES:
        v.add(f"{path}.consecutive_failures", f"must be between 0 (never) and {MAX_CONSECUTIVE_FAILURES}")
    else:
        out.consecutive_failures = alerts.consecutive_failures
    for name, high in (("late_start", MAX_LATE_START_MS), ("running_longer_than", MAX_RUNNING_MS)):
        if (given := _seconds(v, f"{path}.{name}", alerts, name, high)) is not None:
            getattr(out, name).CopyFrom(given)
    if out.recovery and not alerts.consecutive_failures:
        v.add(f"{path}.recovery", "needs consecutive_failures: RECOVERED follows a FAILING alert")
    durations = (alerts.late_start.ToNanoseconds(), alerts.running_longer_than.ToNanoseconds())
    rules = alerts.consecutive_failures or alerts.recovery or alerts.skipped or any(durations)
    if rules and not ids:
        v.add(f"{path}.channel_ids", f"required when a rule is set: 1 to {MAX_TASK_CHANNELS} channel ids")
    elif ids and not rules:
        v.add(
            path,
            "names channels but sets no rule: set consecutive_failures, recovery, skipped, "
            "late_start or running_longer_than",
        )
    return out


def _seconds(v: Violations, path: str, alerts: pb.AlertPolicy, name: str, high_ms: int) -> Duration | None:
    """A duration rule in whole seconds from 1 s to `high_ms`; None when unset or 0 (never)."""
    given: Duration = getattr(alerts, name)
    if not given.ToNanoseconds():  # unset reads as 0
        return None
    ms = duration_ms(v, path, given, 1000, high_ms)
    if ms is not None and ms % 1000:
        v.add(path, "must be whole seconds")
        return None
    return given if ms is not None else None


async def channels_exist(channels: ChannelStore, specs: Sequence[pb.Task], paths: Sequence[str]) -> None:
    """Each channel a task's alerts name is a channel of the task's namespace (one read for all
    the tasks); `paths`: where each task's alerts are in the request (`task.alerts`,
    `requests[3].task.alerts`). A channel that is missing and one of another namespace read
    alike: the message does not tell another namespace's channel exists."""
    wanted = sorted({i for spec in specs for i in spec.alerts.channel_ids})
    found = dict(zip(wanted, await channels.get_many(wanted), strict=True))
    v = Violations()
    for spec, path in zip(specs, paths, strict=True):
        namespace = spec.namespace or DEFAULT_NAMESPACE
        for i, channel_id in enumerate(spec.alerts.channel_ids):
            stored = found[channel_id]
            if stored is None or stored.namespace != namespace:
                v.add(f"{path}.channel_ids[{i}]", f"no channel {channel_id} in namespace {namespace!r}")
    v.raise_if_any()
