"""Bounds of what an error carries (schedcore/errors.py): quoting, violation count, wire size."""

from __future__ import annotations

import base64

from google.rpc import error_details_pb2

from schedcore.errors import (
    MAX_QUOTE,
    MAX_STATUS_BYTES,
    MAX_VIOLATIONS,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    quote,
    status_of,
)


def wire(status) -> int:  # type: ignore[no-untyped-def]
    encoded = status.message.encode()
    message = sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in encoded)
    return message + len(base64.b64encode(status.SerializeToString()))


def listed(status) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return [(v.field, v.description) for v in bad.field_violations]


def test_quote_keeps_a_short_value_and_cuts_a_long_one() -> None:
    assert quote("Europe/Berlin") == "'Europe/Berlin'"
    long = quote("x" * 10_000)
    assert long == repr("x" * MAX_QUOTE) + "..."


def test_violations_are_capped_and_counted() -> None:
    exc = InvalidArgument([FieldViolation(f"task.f{i}", "bad") for i in range(25)])
    status = status_of(exc)
    assert [f for f, _ in listed(status)] == [f"task.f{i}" for i in range(MAX_VIOLATIONS)]
    assert status.message.endswith(f"; and {25 - MAX_VIOLATIONS} more")
    assert str(exc) == status.message  # what the log line shows


def test_the_wire_size_holds_for_huge_non_ascii_violations() -> None:
    many = [FieldViolation("\U0001f600" * 5000, "\u00e9%" * 5000) for _ in range(200)]
    status = status_of(InvalidArgument(many))
    assert wire(status) <= MAX_STATUS_BYTES
    found = listed(status)
    assert 1 <= len(found) <= MAX_VIOLATIONS
    assert status.message.endswith(f"and {200 - len(found)} more")


def test_other_messages_are_clipped_too() -> None:
    status = status_of(FailedPrecondition("\u00e9" * 100_000))
    assert wire(status) <= MAX_STATUS_BYTES and not status.details
    assert status.message.endswith("...")
