"""Sealing secret header values at rest (schedcore/sealing.py)."""

from __future__ import annotations

import pytest

from schedcore.sealing import PREFIX, Sealer, SealError, is_sealed, new_key


def test_sealed_values_open_with_any_listed_key_and_seal_with_the_first() -> None:
    old, new = new_key(), new_key()
    by_old = Sealer([old]).seal("Bearer abc")
    assert is_sealed(by_old) and "abc" not in by_old
    assert Sealer([old]).seal("Bearer abc") != by_old, "random: equal values do not look equal"
    rotating = Sealer([new, old])
    assert rotating.open(by_old) == "Bearer abc"
    assert Sealer([new]).open(rotating.seal("Bearer abc")) == "Bearer abc"


def test_without_keys_values_pass_as_they_are_and_sealed_ones_cannot_open() -> None:
    plain = Sealer()
    assert plain.seal("v") == "v" and plain.open("v") == "v"
    sealed = Sealer([new_key()]).seal("v")
    with pytest.raises(SealError, match="SECRET_KEYS is not set"):
        plain.open(sealed)
    with pytest.raises(SealError, match="not in SECRET_KEYS"):
        Sealer([new_key()]).open(sealed)
    with pytest.raises(SealError):
        Sealer([new_key()]).open(PREFIX + "garbage")


def test_empty_values_stay_empty_and_seal_all_seals_each() -> None:
    sealer = Sealer([new_key()])
    headers = {"A": "1", "B": ""}
    sealer.seal_all(headers)
    assert is_sealed(headers["A"]) and headers["B"] == ""
    assert sealer.open(headers["A"]) == "1"
