"""Secret scrubbing of outputs (services/executor/targets/scrub.py)."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus, urlencode

from services.executor.targets.base import SUCCEEDED, Outcome
from services.executor.targets.scrub import margin, scrub

SECRET = 'p"a\\ss/wörd +&=:%'


def scrubbed(text: str, *secrets: str) -> str:
    outcome = scrub(Outcome(SUCCEEDED, output=text, status_message=text), list(secrets))
    assert outcome.output == outcome.status_message
    return outcome.output


def test_every_encoded_form_is_replaced() -> None:
    shown = [
        SECRET,
        json.dumps({"v": SECRET}),
        json.dumps({"v": SECRET}, ensure_ascii=False),
        json.dumps({"v": SECRET}).replace("/", "\\/"),
        urlencode({"v": SECRET}),
        quote(SECRET, safe=""),
        quote(SECRET),
        quote_plus(SECRET),
        quote(SECRET, safe="").lower(),
    ]
    for text in shown:
        out = scrubbed(f"before {text} after", SECRET)
        assert "[secret]" in out and "wörd" not in out and "w%C3%B6rd" not in out.upper(), (text, out)
        assert "\\u00f6" not in out and out.startswith("before ") and out.endswith(" after"), out


def test_plain_secrets_and_other_text_stay_as_they_were() -> None:
    assert scrubbed("token=abc123 and abc1234", "abc123") == "token=[secret] and [secret]4"
    assert scrubbed("nothing here", "abc123") == "nothing here"


def test_margin_covers_the_longest_form() -> None:
    assert margin([]) == 0
    assert margin(["abc"]) == 3
    assert margin([SECRET]) >= len(json.dumps(SECRET).encode()) - 2
    assert margin([SECRET]) >= len(quote(SECRET, safe=""))
