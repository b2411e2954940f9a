"""The api's checks of an http target's URL (and of a notification channel's, which the scheduler
calls the same way): its form, the address policy on a host that is an address (or a localhost
name), and no credentials in it (schedcore/urlsecrets.py).

The api does not resolve host names: a name that resolves to a refused address is refused by the
executor, which resolves every host itself before it connects (schedcore/egress.py).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from schedcore.netpolicy import LOOPBACK, AddressPolicy, ip_literal
from schedcore.urlsecrets import credential_in

MAX_URL = 2048
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# Where an http target's credentials go instead of its URL.
TARGET_CREDENTIALS = (
    "send credentials in secret_headers instead (an Authorization or API key header), which are "
    "sealed at rest and never shown"
)


def url_problem(
    url: str,
    addresses: AddressPolicy | None,
    *,
    credentials: str | None = TARGET_CREDENTIALS,
) -> str | None:
    """What is wrong with a (stripped, non-empty) URL, or None. Never quotes it. `credentials`:
    where credentials go instead, for the message refusing a URL that carries some; None: the
    URL is itself a secret (sealed, never shown), so it may carry them."""
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters (it has {len(url)})"
    if CONTROL.search(url) or " " in url:
        return "must be a URL without spaces or control characters (encode a space as %20)"
    schemes = ("http", "https")
    form = "must be an absolute http:// or https:// URL with a host"
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        return form
    if parts.scheme not in schemes or not parts.hostname or not port_ok:
        return form
    credential = credential_in(parts) if credentials is not None else None
    if credential is not None:
        return f"carries {credential}: {credentials}"
    if addresses is not None:
        host = parts.hostname.rstrip(".")
        # RFC 6761: localhost names are the loopback, whatever a resolver says.
        local = host == "localhost" or host.endswith(".localhost")
        literal = str(LOOPBACK[4]) if local else ip_literal(host)
        why = addresses.refusal(literal) if literal is not None else None
        if why is not None:
            return f"not a reachable target: {why}"
    return None
