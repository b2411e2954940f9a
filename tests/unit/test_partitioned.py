"""The scheduler's partition helpers (services/scheduler/partitioned.py): batches grouped by
partition, and credits shared fairly among partitions with work."""

from __future__ import annotations

import asyncio

import pytest

from schedcore import redisconn
from schedcore.store import Store
from schedcore.store.keys import Partitions, execution_id
from services.scheduler.partitioned import by_partition, each, fair_split


def test_credits_are_shared_equally_among_partitions_with_work() -> None:
    assert fair_split(9, [100, 100, 100]) == [3, 3, 3]
    assert fair_split(9, [100, 0, 100]) == [5, 0, 4]  # nothing to a partition without work
    assert fair_split(0, [5, 5]) == [0, 0]


def test_what_a_partition_does_not_need_goes_to_the_others() -> None:
    assert fair_split(10, [1, 100, 2]) == [1, 7, 2]
    assert fair_split(10, [1, 2, 3]) == [1, 2, 3]  # all of it when credits cover every wish
    assert sum(fair_split(1000, [7, 500, 3, 499])) == 1000


def test_the_remainder_rotates_so_scarce_credits_serve_every_partition_in_turn() -> None:
    # One credit, three partitions with a backlog: each round favours the next partition.
    served = [fair_split(1, [50, 50, 50], start).index(1) for start in range(6)]
    assert served == [0, 1, 2, 0, 1, 2]
    assert fair_split(5, [50, 50, 50], 2) == [2, 1, 2]


def test_one_partition_gets_what_it_wants_within_the_credits() -> None:
    assert fair_split(7, [3]) == [3]
    assert fair_split(2, [3]) == [2]


@pytest.fixture()
def stores() -> tuple[Store, Store]:
    """Stores with one and with three partitions (no connection is made)."""
    client = redisconn.from_url("redis://127.0.0.1:1")
    return Store(client), Store(client, partitions=3)


def test_a_batch_is_grouped_by_the_partition_of_each_execution(stores: tuple[Store, Store]) -> None:
    one, three = stores
    parts = Partitions(count=3)
    ids = [
        execution_id(parts.id_in(p, 0xABCDEF12345 * (i + 1)), 1_000 + i) for i, p in enumerate([2, 0, 2, 1])
    ]
    assert [p for p in map(parts.of_execution, ids)] == [2, 0, 2, 1]
    groups = by_partition(three, ids)
    assert [(engine.keys.partition, at) for engine, at in groups] == [("0", [1]), ("1", [3]), ("2", [0, 2])]
    assert all(engine is three.engines[int(engine.keys.partition)] for engine, _ in groups)
    # One partition: one group, every position, partition 0's engine (the calls made before).
    assert by_partition(one, ids) == [(one.engine, [0, 1, 2, 3])]
    assert by_partition(one, []) == [] and by_partition(three, []) == []
    # An id an executor garbled goes to partition 0 (whose script finds nothing), not an error.
    assert [(e.keys.partition, at) for e, at in by_partition(three, ["zz-not-an-id", ids[3]])] == [
        ("0", [0]),
        ("1", [1]),
    ]


def test_each_waits_for_every_call_before_raising_the_first_failure() -> None:
    ended: list[str] = []

    async def ok(name: str, delay: float) -> str:
        await asyncio.sleep(delay)
        ended.append(name)
        return name

    async def fails() -> str:
        raise RuntimeError("partition down")

    async def main() -> None:
        assert await each([]) == []
        assert await each([ok("only", 0)]) == ["only"]
        assert await each([ok("a", 0.02), ok("b", 0)]) == ["a", "b"]
        with pytest.raises(RuntimeError, match="partition down"):
            await each([fails(), ok("slow", 0.05)])
        assert "slow" in ended  # not left running behind the failed round

    asyncio.run(main())
