"""Credentials in URLs: a user name or password (`user:password@host`), or a query parameter
named like a key, token, secret, password or signature.

The api refuses such URLs (credentials belong in an http target's secret_headers, sealed at rest
and never shown); the executor still quotes a URL stored before that rule with them redacted.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, unquote_plus, urlsplit

REDACTED = "[secret]"
# A parameter whose name, lowercased without separators, contains one of these...
_STRONG = ("token", "secret", "passw", "pwd", "signature", "credential", "apikey", "accesskey", "privatekey")
# ...or has one of these as a word (api_key, X-Amz-Signature, AWSAccessKeyId, sig, auth).
_WORDS = frozenset({"key", "sig", "auth", "pass", "session", "jwt"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def is_credential_name(name: str) -> bool:
    compact = re.sub(r"[^a-z0-9]", "", name.lower())
    if any(strong in compact for strong in _STRONG):
        return True
    return any(word.lower() in _WORDS for word in _WORD.findall(name))


def _query_names(query: str) -> list[tuple[str, str]]:
    """(decoded name, raw pair) of every parameter of a query string, in order."""
    out = []
    for pair in query.split("&"):
        if pair:
            out.append((unquote_plus(pair.partition("=")[0]), pair))
    return out


def credential_in(parts: SplitResult) -> str | None:
    """Where a URL carries a credential, for an error message (never the value), or None."""
    if parts.username is not None or parts.password is not None:
        return "a user name or password (user:password@host)"
    for name, _ in _query_names(parts.query):
        if is_credential_name(name):
            return f"a credential in query parameter {name[:40]!r}"
    return None


def redact(url: str) -> str:
    """`url` with its user information and the values of credential-named parameters replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    pairs = []
    for name, pair in _query_names(parts.query):
        pairs.append(f"{pair.partition('=')[0]}={REDACTED}" if is_credential_name(name) else pair)
    return parts._replace(netloc=netloc, query="&".join(pairs)).geturl()
