"""Secret values out of an attempt's output and status message: a target may echo a secret
header back, as it is, JSON-escaped (in a JSON body) or URL-encoded (in a form or a query)."""

from __future__ import annotations

import dataclasses
import json
import re
from urllib.parse import quote, quote_plus

from services.executor.targets.base import Outcome, bound_text

REDACTED = "[secret]"
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def forms(secret: str) -> set[str]:
    """The ways `secret` may appear in an output: as it is, JSON-escaped (ASCII-only or not, with
    "/" escaped or not) and percent-encoded (upper- or lowercase hex, space as %20 or +, "/" kept
    or not)."""
    escaped = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    escaped |= {e.replace("/", "\\/") for e in escaped}
    encoded = {quote(secret, safe=""), quote(secret), quote_plus(secret, safe=""), quote_plus(secret)}
    encoded |= {_PERCENT.sub(lambda m: m.group().lower(), e) for e in encoded}
    return {form for form in {secret, *escaped, *encoded} if form}


def margin(secrets: list[str]) -> int:
    """Bytes a read must go beyond the output bound so a secret's longest form straddling the
    bound is still whole when it is scrubbed."""
    return max((len(form.encode()) for s in secrets for form in forms(s)), default=0)


def scrub(outcome: Outcome, secrets: list[str]) -> Outcome:
    """The outcome with every form of every secret replaced by [secret]."""
    every = sorted({form for s in secrets for form in forms(s)}, key=len, reverse=True)

    def clean(text: str) -> str:
        for form in every:
            text = text.replace(form, REDACTED)
        return text

    return dataclasses.replace(
        outcome, output=clean(outcome.output), status_message=clean(outcome.status_message)
    )


def scrubbed(outcome: Outcome, secrets: list[str], limit: int) -> Outcome:
    """The outcome (read up to `limit` + margin(secrets)) scrubbed, then cut to `limit`: the one
    way a target that holds secrets (http headers, command variables) bounds its output."""
    if secrets:
        outcome = scrub(outcome, secrets)
    output, cut = bound_text(outcome.output, limit)
    return dataclasses.replace(outcome, output=output, output_truncated=True) if cut else outcome
