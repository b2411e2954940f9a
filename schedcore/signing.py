"""Signed http calls: the Standard Webhooks scheme (https://www.standardwebhooks.com/,
docs/security.md "Signed http calls").

A task's `HttpTarget.signing_secrets` are each `whsec_` + the base64 of the key's bytes. A signed
request carries `webhook-id`, `webhook-timestamp` (integer seconds since the epoch) and
`webhook-signature`: for every secret, `v1,` + the base64 of HMAC-SHA256(key, "<id>.<timestamp>.
<body>"), space-separated, so a target that rotates its secret accepts either while it holds both.

The api checks a secret's form with `secret_key` (never quoting it); the executor signs with
`signature_headers`, over the exact body bytes it sends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

PREFIX = "whsec_"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
MAX_SECRETS = 2
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
HEADERS = (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
FORM = f"must be {PREFIX} followed by the base64 of {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes"


def secret_key(secret: str) -> bytes:
    """The key bytes of `whsec_<base64>`; ValueError (FORM, never the value) otherwise."""
    if not secret.startswith(PREFIX):
        raise ValueError(FORM)
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(FORM) from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(FORM)
    return key


def signature_headers(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a request signed with every secret (in the clear); ValueError for a
    secret not of the form (the api refuses those before they are stored)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    signatures = [
        "v1," + base64.b64encode(hmac.new(secret_key(s), signed, hashlib.sha256).digest()).decode()
        for s in secrets
    ]
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(signatures),
    }
