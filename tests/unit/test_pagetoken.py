"""Page tokens: signed, bound to the request's filters, expiring."""

from __future__ import annotations

import base64
import json

import pytest

from schedcore.errors import InvalidArgument, Unavailable
from services.api import pagetoken
from services.api.pagetoken import PageTokens

SECRET = b"0123456789abcdef0123456789abcdef"
FILTERS = json.dumps([1, [["team", "a"]], "nightly", False])
LAST = "nightly report\x00a1b2c3d4e5f60718"


def tokens(secret: bytes = SECRET, ttl_s: int = 3600) -> PageTokens:
    return PageTokens(secret, ttl_s)


def assert_page_token_error(token: str, filters: str = FILTERS, pt: PageTokens | None = None) -> str:
    with pytest.raises(InvalidArgument) as info:
        (pt or tokens()).decode(token, filters)
    assert [v.field for v in info.value.violations] == ["page_token"]
    return info.value.violations[0].description


def raw(token: str) -> bytes:
    assert token.startswith("p")
    body = token[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def encode_raw(data: bytes) -> str:
    return "p" + base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_no_token_starts_with_a_dash() -> None:
    """base64url text starts with "-" for one MAC in 64: `schedctl list --page-token -Xy...`
    would read it as an option."""
    pt = tokens()
    for i in range(2000):
        token = pt.encode(FILTERS, f"key-{i}")
        assert not token.startswith("-")
        assert pt.decode(token, FILTERS) == f"key-{i}"


def test_a_token_without_its_prefix_is_refused() -> None:
    token = tokens().encode(FILTERS, LAST)
    assert_page_token_error(token[1:])
    assert_page_token_error("q" + token[1:])


def test_round_trip() -> None:
    pt = tokens()
    token = pt.encode(FILTERS, LAST)
    assert pt.decode(token, FILTERS) == LAST
    # URL-safe, unpadded: it can go in a query string as is.
    assert "=" not in token and "+" not in token and "/" not in token


def test_round_trip_of_unusual_keys() -> None:
    pt = tokens()
    for last in ["", "~:0000000000000000", "名前\x00ffffffffffffffff", "0" * 500]:
        assert pt.decode(pt.encode(FILTERS, last), FILTERS) == last


def test_empty_token_is_the_first_page() -> None:
    assert tokens().decode("", FILTERS) is None


def test_another_replica_with_the_same_secret_accepts_the_token() -> None:
    token = tokens().encode(FILTERS, LAST)
    assert PageTokens(SECRET, 3600).decode(token, FILTERS) == LAST


def test_token_from_another_secret_is_rejected() -> None:
    token = tokens(b"another secret").encode(FILTERS, LAST)
    assert "not a token this service issued" in assert_page_token_error(token)


@pytest.mark.parametrize(
    "garbage",
    ["x", "!!!!", "not-a-token", "AAAA", "A" * 40, "é", "\x00\x01", " ", "a" * 1001, "====", "%2F"],
)
def test_garbage_tokens_are_rejected(garbage: str) -> None:
    assert "invalid" in assert_page_token_error(garbage)


def test_truncated_tokens_are_rejected() -> None:
    token = tokens().encode(FILTERS, LAST)
    for cut in (1, 2, 3, 4, 10, len(token) // 2, len(token) - 1):
        assert_page_token_error(token[:-cut])


def test_altered_tokens_are_rejected() -> None:
    token = tokens().encode(FILTERS, LAST)
    data = bytearray(raw(token))
    for position in (0, 5, 15, 16, 20, len(data) // 2, len(data) - 2):
        altered = bytearray(data)
        altered[position] ^= 0x01
        assert_page_token_error(encode_raw(bytes(altered)))


def test_forged_body_with_a_guessed_mac_is_rejected() -> None:
    """A client that rewrites the cursor (e.g. to skip ahead) cannot re-sign it."""
    token = tokens().encode(FILTERS, LAST)
    data = raw(token)
    mac, body = data[:16], data[16:]
    fields = json.loads(body)
    fields["k"] = "zzzz"
    forged_body = json.dumps(fields, separators=(",", ":")).encode()
    assert_page_token_error(encode_raw(mac + forged_body))
    assert_page_token_error(encode_raw(b"\x00" * 16 + forged_body))
    # Extending the token (a length-extension attempt) fails too.
    assert_page_token_error(encode_raw(data + b"x"))


def test_token_used_with_other_filters_is_rejected() -> None:
    pt = tokens()
    token = pt.encode(FILTERS, LAST)
    other = json.dumps([1, [["team", "b"]], "nightly", False])
    message = assert_page_token_error(token, other, pt)
    assert "filters" in message
    assert pt.decode(token, FILTERS) == LAST  # the same filters still work


def test_expired_token_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_800_000_000.0]
    monkeypatch.setattr(pagetoken.time, "time", lambda: clock[0])
    pt = tokens(ttl_s=600)
    token = pt.encode(FILTERS, LAST)
    clock[0] += 600  # exactly the ttl: still valid
    assert pt.decode(token, FILTERS) == LAST
    clock[0] += 1.5
    assert "expired" in assert_page_token_error(token, FILTERS, pt)


def test_token_issued_now_is_valid_for_the_whole_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_800_000_000.9]
    monkeypatch.setattr(pagetoken.time, "time", lambda: clock[0])
    pt = tokens(ttl_s=60)
    token = pt.encode(FILTERS, LAST)
    clock[0] += 59
    assert pt.decode(token, FILTERS) == LAST


def test_without_a_secret_tokens_are_unavailable_until_one_is_set() -> None:
    pt = PageTokens(b"", 3600)
    assert pt.unset
    with pytest.raises(Unavailable):
        pt.encode(FILTERS, LAST)
    with pytest.raises(Unavailable):
        pt.decode("pAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", FILTERS)
    assert pt.decode("", FILTERS) is None  # the first page needs no secret
    pt.set_secret(SECRET)
    assert not pt.unset
    assert tokens().decode(pt.encode(FILTERS, LAST), FILTERS) == LAST


def test_a_token_altered_into_an_equivalent_base64_spelling_is_refused() -> None:
    tokens = PageTokens(b"secret", 3600)
    whole = tokens.encode("filters", "last-key")
    token = whole[1:]  # the base64 text after the prefix
    # Each decodes to the very same bytes as the token, with a lenient base64 decoder.
    variants = [token.replace("-", "+").replace("_", "/"), token[:5] + "." + token[5:]]
    last = token[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for ch in alphabet:  # last characters differing only in the bits the decoder ignores
        spelled = token[:-1] + ch
        if ch != last and base64.urlsafe_b64decode(spelled + "=" * (-len(spelled) % 4)) == (
            base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        ):
            variants.append(spelled)
    assert any(v != token for v in variants)
    for variant in variants:
        if variant == token:
            continue
        with pytest.raises(InvalidArgument):
            tokens.decode("p" + variant, "filters")
    assert tokens.decode(whole, "filters") == "last-key"
