"""Signed, expiring page tokens for ListTasks and ListExecutions (keyset pagination).

A token carries the last key the previous page returned, the request's filters (hashed) and its
issue time, signed with HMAC-SHA256. A token that was altered or made up, one used with other
filters, or an expired one gets INVALID_ARGUMENT naming `page_token`. Every api replica shares the
secret (PAGE_TOKEN_SECRET, or one created once in Redis), so any replica accepts any token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from schedcore.errors import InvalidArgument, Unavailable

_MAC_BYTES = 16
# Every token starts with this letter: base64url text may start with "-", which a command line
# (schedctl list --page-token TOKEN) would read as an option.
_PREFIX = "p"


class PageTokens:
    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self._secret = secret
        self._ttl_s = ttl_s

    @property
    def unset(self) -> bool:
        return not self._secret

    def set_secret(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, body: bytes) -> bytes:
        if not self._secret:  # the shared secret comes from Redis, which has not answered yet
            raise Unavailable("the task store is unavailable; retry later")
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, filters: str, last: str) -> str:
        body = json.dumps(
            {"f": _digest(filters), "k": last, "t": int(time.time())}, separators=(",", ":")
        ).encode()
        return _PREFIX + base64.urlsafe_b64encode(self._mac(body) + body).decode().rstrip("=")

    def decode(self, token: str, filters: str) -> str | None:
        """The last key of the previous page; None for an empty token (the first page)."""
        if not token:
            return None
        token = token.removeprefix(_PREFIX) if token.startswith(_PREFIX) else "!"
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raw = b""
        # Only the exact text encode() wrote: base64 decoding forgives ("+" reads as "-", stray
        # characters are skipped, unused low bits of the last character are ignored), so an
        # altered token could otherwise decode to the same bytes and pass.
        if base64.urlsafe_b64encode(raw).decode().rstrip("=") != token:
            raw = b""
        mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidArgument.field("page_token", "invalid: not a token this service issued")
        data = json.loads(body)
        if data["f"] != _digest(filters):
            raise InvalidArgument.field(
                "page_token", "does not match this request's filters: repeat them as on the first page"
            )
        if time.time() - data["t"] > self._ttl_s:
            raise InvalidArgument.field("page_token", "expired: start again from the first page")
        return str(data["k"])


def _digest(filters: str) -> str:
    return hashlib.sha256(filters.encode()).hexdigest()[:16]
