"""Redis key names and index members (schedcore/store/keys.py, docs/redis-layout.md)."""

from __future__ import annotations

import random
import re

import pytest

from schedcore.settings import Settings, SettingsError
from schedcore.store import keys
from schedcore.store.keys import (
    EXECUTION_ID,
    NO_NEXT_RUN,
    TASK_ID,
    Keys,
    Partitions,
    execution_id,
    history_member,
    name_member,
    next_member,
    pad_ms,
)
from schedcore.timeutil import MAX_MS

TID = "0123456789abcdef"
TID2 = "fedcba9876543210"


def all_keys(k: Keys) -> list[str]:
    return [
        k.task(TID),
        k.by_name,
        k.by_next,
        k.request_id("req-1"),
        k.execution(execution_id(TID, 1_780_000_000_000)),
        k.task_history(TID),
        k.history,
        k.ready,
        k.page_token_secret,
        k.token(TID),
        k.token_hash("ab" * 32),
        k.tokens,
        k.audit,
    ]


def test_every_key_shares_one_hash_tag() -> None:
    names = all_keys(Keys())
    for name in names:
        assert name.startswith("ts:{0}:"), name
        # Redis Cluster hashes the first {...}: it must be the partition tag, for every key.
        assert re.search(r"\{([^}]*)\}", name).group(1) == "0"  # type: ignore[union-attr]
    assert len(set(names)) == len(names)


def test_prefix_and_partition() -> None:
    k = Keys(prefix="prod", partition="7")
    for name in all_keys(k):
        assert name.startswith("prod:{7}:"), name
    assert Keys("a").task(TID) != Keys("b").task(TID)


def test_key_shapes() -> None:
    k = Keys()
    assert k.task(TID) == f"ts:{{0}}:task:{TID}"
    assert k.by_name == "ts:{0}:idx:name"
    assert k.by_next == "ts:{0}:idx:next"
    assert k.history == "ts:{0}:hist"
    assert k.task_history(TID) == f"ts:{{0}}:hist:{TID}"
    assert k.ready == "ts:{0}:ready"
    assert k.page_token_secret == "ts:{0}:secret:page-token"


def test_request_id_keys_are_hashed() -> None:
    k = Keys()
    weird = "a{b}c:\x00" + "x" * 1000
    key = k.request_id(weird)
    assert "x" * 40 not in key and "{b}" not in key
    assert re.fullmatch(r"ts:\{0\}:reqid:[0-9a-f]{32}", key)
    assert k.request_id(weird) == key  # stable
    assert k.request_id("r1") != k.request_id("r2")
    assert len(k.request_id("r")) == len(k.request_id("r" * 128))


def test_pad_ms() -> None:
    assert pad_ms(0) == "0000000000000"
    assert pad_ms(1_780_000_000_123) == "1780000000123"
    assert len(pad_ms(1)) == keys.MS_WIDTH == 13


def test_execution_id_format() -> None:
    occurrence = execution_id(TID, 1_780_000_000_123)
    assert occurrence == f"{TID}-1780000000123"
    manual = execution_id(TID, 5, "0a1b")
    assert manual == f"{TID}-0000000000005-m0a1b"
    for eid in (occurrence, manual):
        m = EXECUTION_ID.match(eid)
        assert m and m.group(1) == TID
    assert EXECUTION_ID.match(f"{TID}-1780000000123")
    assert not EXECUTION_ID.match(f"{TID}-178000000012")  # 12 digits
    assert not EXECUTION_ID.match(f"{TID}-1780000000123-mXYZW")
    assert TASK_ID.match(TID) and not TASK_ID.match(TID.upper()) and not TASK_ID.match(TID[:-1])


def test_execution_ids_of_a_task_sort_chronologically() -> None:
    rng = random.Random(7)
    times = sorted({rng.randrange(0, 10**13) for _ in range(200)} | {0, 9, 10, 99_999, 10**12})
    ids = [execution_id(TID, t) for t in times]
    assert sorted(ids) == ids
    # A manual run sorts right after an occurrence of the same millisecond, before the next ms.
    assert execution_id(TID, 100) < execution_id(TID, 100, "0000") < execution_id(TID, 101)


def test_history_members_sort_by_nominal_time_across_tasks() -> None:
    rng = random.Random(11)
    entries = [
        (rng.randrange(0, 10**13), rng.choice([TID, TID2]), rng.choice(["", "abcd"])) for _ in range(300)
    ]
    members = [history_member(execution_id(t, ms, sfx)) for ms, t, sfx in entries]
    by_bytes = sorted(members)
    nominal = [int(m.split(":", 1)[0]) for m in by_bytes]
    assert nominal == sorted(nominal)
    m = history_member(execution_id(TID2, 42, "ffff"))
    assert m == f"0000000000042:{TID2}-0000000000042-mffff"


def test_next_member_orders_by_time_then_id_and_no_next_run_last() -> None:
    members = [
        next_member(TID2, 2000),
        next_member(TID, None),
        next_member(TID, 2000),
        next_member(TID, 10),
        next_member(TID2, None),
    ]
    assert sorted(members) == [
        next_member(TID, 10),
        next_member(TID, 2000),
        next_member(TID2, 2000),
        f"{NO_NEXT_RUN}:{TID}",
        f"{NO_NEXT_RUN}:{TID2}",
    ]


@pytest.mark.parametrize("far", [5 * 10**12, MAX_MS - 1, MAX_MS])
def test_index_members_sort_by_time_for_every_time_validation_accepts(far: int) -> None:
    """Validation accepts instants up to timeutil.MAX_MS. Their index members must still sort
    after a present-day one, or the due index (every member <= now is due) would treat a task
    for a far-future run_time as due now, and history would sort it among today's."""
    now = 1_780_000_000_000
    assert len(pad_ms(MAX_MS)) == keys.MS_WIDTH
    assert next_member(TID, far) > next_member(TID, now)
    assert next_member(TID, far) < next_member(TID, None)
    far_id = execution_id(TID, far)
    assert EXECUTION_ID.match(far_id)
    assert far_id > execution_id(TID, now)
    assert history_member(far_id) > history_member(execution_id(TID, now))


def test_name_member_orders_by_name_then_id() -> None:
    names = ["b", "a b", "a", "A", "ab", "a", "é", ""]
    members = sorted(name_member(n, TID2 if i % 2 else TID) for i, n in enumerate(names))
    got = [(m.split("\x00")[0], m.split("\x00")[1]) for m in members]
    assert got == sorted(got, key=lambda p: (p[0].encode(), p[1]))
    # A name that is a prefix of another sorts first whatever the ids.
    assert name_member("a", "f" * 16) < name_member("a b", "0" * 16)


def test_task_of_execution_is_the_task_id_of_occurrences_and_manual_runs() -> None:
    for eid in (execution_id(TID, 1_780_000_000_123), execution_id(TID, 5, "0a1b")):
        assert keys.task_of_execution(eid) == TID


def test_partitions_place_ids_and_draw_new_ones_inside_a_partition() -> None:
    one, five = Partitions("ts", 1), Partitions("ts", 5)
    assert one.task("ffffffffffffffff") == Keys("ts", "0")  # one partition: every id where it was
    assert five.of_task("0000000000000007") == 2
    assert five.execution("0000000000000007-0000000001000") == Keys("ts", "2")
    for p in range(5):
        for r in (0, 1, 12345, 2**63, 2**64 - 1, 2**64 - 3):
            made = five.id_in(p, r)
            assert TASK_ID.match(made) and five.of_task(made) == p
            assert abs(int(made, 16) - r) < 5  # the random bits stay, less the last log2(5)
    assert [k.partition for k in five.all] == ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match="partitions must be 1 to 256"):
        Partitions("ts", 0)


def test_a_request_id_names_the_partition_of_its_request_key() -> None:
    parts = Partitions("ts", 7)
    for request_id, namespace in (("a", "default"), ("retry-1", "team"), ("x" * 300, "default")):
        digest = Keys().request_id(request_id, namespace).rsplit(":", 1)[1]
        assert parts.of_request(request_id, namespace) == int(digest, 16) % 7


def test_the_partitions_setting_allows_exactly_what_keys_allows() -> None:
    env = {"GRPC_PLAINTEXT": "true"}
    assert (
        Settings.from_env({**env, "PARTITIONS": str(keys.MAX_PARTITIONS)}).partitions == keys.MAX_PARTITIONS
    )
    with pytest.raises(SettingsError, match="PARTITIONS"):
        Settings.from_env({**env, "PARTITIONS": str(keys.MAX_PARTITIONS + 1)})
