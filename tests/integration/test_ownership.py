"""Schedulers share partitions (docs/partitions.md, invariant 2): every partition is owned by one
live replica, a replica that stops beating loses its partitions within a lease, one that joins
takes its share, and no partition is ever trusted by two replicas at once."""

from __future__ import annotations

import asyncio
import collections
import time

import redis

from schedcore.errors import StoreUnavailable
from schedcore.redisconn import from_url
from schedcore.store.keys import Partitions
from schedcore.store.ownership import OwnershipStore
from schedcore.store.scripts import Scripts
from services.scheduler.ownership import Ownership, owner_of
from tests.support import RedisServer

P = 12
LEASE_S = 0.6


def test_rendezvous_moves_only_the_joiners_share() -> None:
    before = {p: owner_of(["a", "b", "c"], p) for p in range(256)}
    after = {p: owner_of(["a", "b", "c", "d"], p) for p in range(256)}
    moved = [p for p in range(256) if before[p] != after[p]]
    assert all(after[p] == "d" for p in moved)  # nothing moves between the old members
    assert 30 < len(moved) < 100  # about a quarter
    assert collections.Counter(before.values()).keys() == {"a", "b", "c"}


def test_partitions_are_shared_taken_over_and_never_held_twice(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    async def scenario() -> None:
        client = from_url(redis_srv.url)
        parts = Partitions("ts", P)
        store = OwnershipStore(client, parts, Scripts(client))
        replicas = {name: Ownership(store, P, name, LEASE_S) for name in ("s1", "s2", "s3")}

        def check_disjoint(live: dict[str, Ownership]) -> set[int]:
            owned = [set(o.owned()) for o in live.values()]
            assert sum(len(s) for s in owned) == len(set().union(*owned)), owned
            return set().union(*owned)

        async def beat(live: dict[str, Ownership], rounds: int) -> None:
            for _ in range(rounds):
                for o in live.values():
                    await o.beat()
                    check_disjoint(live)
                await asyncio.sleep(LEASE_S / 3)

        await beat(replicas, 2)
        assert check_disjoint(replicas) == set(range(P))
        assert all(o.owned() for o in replicas.values())  # 12 over 3: each has some
        for p in range(P):  # the owner keys say the same
            holder = next(name for name, o in replicas.items() if o.owns(p))
            assert await store.owner(p) == holder

        # s3 is killed (it stops beating): its partitions are worked again within a lease and a beat.
        dead = replicas.pop("s3")
        orphaned = set(dead.owned())
        killed = time.monotonic()
        while check_disjoint(replicas) != set(range(P)):
            assert time.monotonic() - killed < LEASE_S * 2 + LEASE_S / 3 + 0.5, orphaned
            await beat(replicas, 1)
        assert not dead.owned()  # its own clock stopped trusting its leases, too

        # s4 joins: it gets its share once the others let go, with no partition held twice.
        replicas["s4"] = Ownership(store, P, "s4", LEASE_S)
        await beat(replicas, 3)
        assert check_disjoint(replicas) == set(range(P))
        assert replicas["s4"].owned()

        # s1 shuts down: it hands its partitions back at once, not after a lease.
        leaving = replicas.pop("s1")
        await leaving.leave()
        await beat(replicas, 1)
        assert check_disjoint(replicas) == set(range(P))
        await client.aclose()

    asyncio.run(scenario())


class FlakyStore:
    """An OwnershipStore whose claims of one partition fail (its Redis node is down, say)."""

    def __init__(self, broken: int) -> None:
        self.broken = broken
        self.released: list[int] = []

    async def heartbeat(self, instance_id: str, lease_ms: int) -> list[str]:
        return [instance_id]

    async def claim(self, partition: int, instance_id: str, lease_ms: int) -> bool:
        if partition == self.broken:
            raise StoreUnavailable("node down")
        return True

    async def release(self, partition: int, instance_id: str) -> bool:
        self.released.append(partition)
        return True

    async def leave(self, instance_id: str) -> None:
        return None


def test_one_partition_failing_to_renew_does_not_stop_the_others() -> None:
    store = FlakyStore(broken=2)
    only = Ownership(store, 8, "solo", LEASE_S)  # type: ignore[arg-type]  # a stand-in store
    asyncio.run(only.beat())
    assert only.owned() == [0, 1, 3, 4, 5, 6, 7]
    asyncio.run(only.leave())
    assert sorted(store.released) == list(range(8))  # every one, held or not: the script checks
    assert only.owned() == []


def test_each_partition_is_reported_by_one_replica(redis_srv: RedisServer, rds: redis.Redis) -> None:
    """The backlog gauges' rule (Ownership.reports): with one partition, which every replica works,
    and with several, exactly one of two live replicas reports each, and the survivor takes over
    the reporting of a replica that left."""

    async def scenario(count: int) -> None:
        client = from_url(redis_srv.url)
        store = OwnershipStore(client, Partitions("ts", count), Scripts(client))
        replicas = {name: Ownership(store, count, name, LEASE_S) for name in ("r1", "r2")}
        for _ in range(2):
            for o in replicas.values():
                await o.beat()
        for p in range(count):
            reporters = [name for name, o in replicas.items() if o.reports(p)]
            assert reporters == [owner_of(["r1", "r2"], p)], (count, p, reporters)
        if count == 1:
            assert all(o.owns(0) for o in replicas.values())  # both work it; one reports it
        leaving = owner_of(["r1", "r2"], 0)
        await replicas.pop(leaving).leave()
        (survivor,) = replicas.values()
        deadline = time.monotonic() + LEASE_S * 3
        while not all(survivor.reports(p) for p in range(count)):
            assert time.monotonic() < deadline, survivor.owned()
            await survivor.beat()
            await asyncio.sleep(LEASE_S / 3)
        await client.aclose()

    for count in (1, 4):
        rds.flushall()
        asyncio.run(scenario(count))


def test_a_replica_whose_heartbeat_is_stale_reports_nothing() -> None:
    now = [100.0]
    store = FlakyStore(broken=-1)
    alone = Ownership(store, 1, "solo", LEASE_S, clock=lambda: now[0])  # type: ignore[arg-type]
    assert not alone.reports(0)  # no heartbeat yet: members unknown
    asyncio.run(alone.beat())
    assert alone.reports(0)
    now[0] += LEASE_S  # no heartbeat for a lease: the others may have dropped it from membership
    assert not alone.reports(0)
    assert alone.owns(0)  # it still works the one partition, as every replica does
