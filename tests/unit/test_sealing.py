"""Sealing secret target values at rest (schedcore/sealing.py)."""

from __future__ import annotations

import pytest

from schedcore import pb
from schedcore.sealing import PREFIX, Sealer, SealError, is_sealed, new_key, secret_maps


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


def test_empty_values_stay_empty_and_seal_target_seals_each_secret_of_either_kind() -> None:
    sealer = Sealer([new_key()])
    http = pb.Target(http=pb.HttpTarget(headers={"Plain": "p"}, secret_headers={"A": "1", "B": ""}))
    command = pb.Target(command=pb.CommandTarget(env={"PLAIN": "p"}, secret_env={"TOKEN": "t"}))
    for target in (http, command):
        sealer.seal_target(target)
    headers = http.http.secret_headers
    assert is_sealed(headers["A"]) and headers["B"] == ""
    assert sealer.open(headers["A"]) == "1"
    assert http.http.headers["Plain"] == "p" and command.command.env["PLAIN"] == "p"
    assert sealer.open(command.command.secret_env["TOKEN"]) == "t"
    assert [path for path, _ in secret_maps(command)] == ["command.secret_env"]
    log = pb.Target(log=pb.LogTarget())
    assert secret_maps(log) == [] and log.WhichOneof("kind") == "log"


def test_open_each_names_the_value_that_cannot_open_never_the_value() -> None:
    key = new_key()
    values = {"A": Sealer([key]).seal("clear-a"), "B": "as-is"}
    assert Sealer([key]).open_each(values) == {"A": "clear-a", "B": "as-is"}
    with pytest.raises(SealError, match=r"^'A' cannot be used: .*SECRET_KEYS") as info:
        Sealer().open_each(values)
    assert "clear-a" not in str(info.value)
