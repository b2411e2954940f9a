"""The channel form's values, to and from a Channel: pure functions, as ui/taskform.py for tasks.

Widget values live in the session under the keys below (prefix `ch_`). A channel's secrets (a
webhook's signing secrets, a Slack webhook's URL) never come back from the api, so an edit
starts with them empty, and a secret sent empty keeps the stored one at its position (the api's
rule, docs/alerts.md).
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from schedcore import pb, signing

WEBHOOK, SLACK, EMAIL = "Webhook (signed)", "Slack-compatible", "Email"
KINDS = {"webhook": WEBHOOK, "slack": SLACK, "email": EMAIL}
SECRET_BYTES = 32

# Api field path (prefix) -> widget key; the longest matching prefix wins (ui/fielderrors.py).
FIELD_WIDGETS = {
    "channel": "ch_kind",
    "channel.name": "ch_name",
    "channel.namespace": "ch_namespace",
    "channel.webhook": "ch_url",
    "channel.webhook.url": "ch_url",
    "channel.webhook.signing_secrets": "ch_secret_1",
    "channel.webhook.signing_secrets[0]": "ch_secret_1",
    "channel.webhook.signing_secrets[1]": "ch_secret_2",
    "channel.slack": "ch_slack",
    "channel.email": "ch_emails",
    "channel.email.to": "ch_emails",  # an address's error: "item 3: ...", the third line
}


def new_secret() -> str:
    """A signing secret as the api wants it: `whsec_` and the base64 of 32 random bytes."""
    return signing.PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def defaults(namespace: str) -> dict[str, Any]:
    """A new channel's form. `ch_stored`: how many secrets the channel being edited holds, of
    which kind (`ch_stored_kind`), so the form can say that an empty field keeps one."""
    return {
        "ch_name": "",
        "ch_namespace": namespace,
        "ch_kind": WEBHOOK,
        "ch_url": "",
        "ch_two": False,
        "ch_secret_1": "",
        "ch_secret_2": "",
        "ch_slack": "",
        "ch_emails": "",
        "ch_stored": 0,
        "ch_stored_kind": "",
    }


def from_channel(channel: pb.Channel) -> dict[str, Any]:
    """The form's values for editing `channel` (as the api returns it: secrets empty)."""
    values = defaults(channel.namespace)
    kind = channel.WhichOneof("kind") or "webhook"
    values.update(ch_name=channel.name, ch_kind=KINDS[kind], ch_stored_kind=kind)
    if kind == "webhook":
        stored = len(channel.webhook.signing_secrets)
        values.update(ch_url=channel.webhook.url, ch_two=stored > 1, ch_stored=stored)
    elif kind == "slack":
        values.update(ch_stored=1)
    else:
        values.update(ch_emails="\n".join(channel.email.to))
    return values


def kind_of(values: dict[str, Any]) -> str:
    """The proto name of the kind picked ("webhook", "slack", "email")."""
    return next(name for name, label in KINDS.items() if label == values["ch_kind"])


def kept(values: dict[str, Any], slot: int) -> bool:
    """Whether secret `slot` (1, 2; the Slack URL is 1) left empty keeps a stored one."""
    return values.get("ch_stored_kind") == kind_of(values) and slot <= int(values.get("ch_stored") or 0)


def to_channel(values: dict[str, Any]) -> pb.Channel:
    """The Channel the form describes; the api checks it (and says what is wrong by field)."""
    channel = pb.Channel(name=str(values["ch_name"]).strip(), namespace=str(values["ch_namespace"]).strip())
    kind = kind_of(values)
    if kind == "webhook":
        chosen = [values["ch_secret_1"], *([values["ch_secret_2"]] if values.get("ch_two") else [])]
        channel.webhook.CopyFrom(
            pb.WebhookChannel(
                url=str(values["ch_url"]).strip(), signing_secrets=[str(s).strip() for s in chosen]
            )
        )
    elif kind == "slack":
        channel.slack.webhook_url = str(values["ch_slack"]).strip()
    else:
        lines = [line.strip() for line in str(values["ch_emails"]).splitlines()]
        channel.email.to.extend(line for line in lines if line)
    return channel


def generated_slot(values: dict[str, Any]) -> int:
    """Where "Generate a secret" puts the new one: the first field that is empty and keeps no
    stored secret (so an edit adds it beside the stored one, as a rotation starts), else the
    first field."""
    for slot in (1, 2):
        if not values.get(f"ch_secret_{slot}") and not kept(values, slot):
            return slot
    return 1


def label(channel: pb.Channel) -> str:
    """A channel as pickers show it: `ops (webhook)`."""
    return f"{channel.name} ({channel.WhichOneof('kind') or '?'})"
