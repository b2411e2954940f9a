"""Audit event ids across partitions (schedcore/store/audit.py): partition 0 keeps the bare stream
entry id, the others append their number; every event has exactly one id, which parses back."""

from __future__ import annotations

from schedcore.store.audit import event_id, parse_event_id


def test_ids_name_the_entry_and_its_partition_and_parse_back() -> None:
    assert event_id("1700000000000-0", 0) == "1700000000000-0"
    assert event_id("1700000000000-5", 2) == "1700000000000-5-2"
    for entry, partition in (("1-0", 0), ("1700000000000-12", 7), ("18446744073709551615-3", 255)):
        ms, seq = (int(x) for x in entry.split("-"))
        assert parse_event_id(event_id(entry, partition), 256) == (ms, seq, partition)


def test_only_ids_this_deployment_can_issue_parse() -> None:
    assert parse_event_id("5-1-2", 3) == (5, 1, 2)
    assert parse_event_id("5-1", 1) == (5, 1, 0)
    for bad in (
        "5-1-3",  # no partition 3 among three
        "5-1-0",  # partition 0's id carries no suffix: one id per event
        "5-1-02",  # nor a leading zero
        "5",
        "5-",
        "-1",
        "5-1-",
        "5-1-2-1",
        "a-1",
        "18446744073709551616-0",  # past a stream id's 64 bits
        "",
    ):
        assert parse_event_id(bad, 3) is None, bad
