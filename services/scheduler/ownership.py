"""This replica's share of the partitions (docs/partitions.md, "Schedulers share partitions").

Every PARTITION_LEASE_SECONDS / 3 a heartbeat keeps this replica in the membership set and
reads the live members; a partition belongs to the member with the highest
sha256(member, partition) (rendezvous hashing: a join or a leave moves about P / N partitions).
The replica takes or renews the owner lease of each partition it should own and gives up the
ones it should no longer; it works a partition only while its lease holds by its own monotonic
clock (the time the renewal was sent plus 90% of the lease), so it stops before Redis could give
the partition to another.

With one partition there is nothing to share: every replica works it (`everyone`), as before
partitions existed. Safety never rests on ownership: two replicas working one partition at once
waste work and never fire, lease or record twice (docs/engine.md, "Invariants")."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence

from schedcore.loops import guarded_round, wait_event
from schedcore.store.ownership import OwnershipStore

log = logging.getLogger("scheduler.ownership")

# The part of a lease this replica relies on: the rest covers clocks running at different rates.
TRUSTED = 0.9
BEATS_PER_LEASE = 3


def owner_of(members: Sequence[str], partition: int) -> str:
    """The member that should work `partition` (rendezvous hashing)."""
    return max(members, key=lambda m: hashlib.sha256(f"{m}\n{partition}".encode()).digest())


class Ownership:
    def __init__(
        self,
        store: OwnershipStore,
        count: int,
        instance_id: str,
        lease_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.count = count
        self.instance_id = instance_id
        self.lease_s = lease_s
        self.clock = clock
        self.everyone = count == 1
        self._until: dict[int, float] = {}  # partition -> monotonic time its lease is trusted until
        # With one partition: the live members at the last heartbeat, trusted until (monotonic).
        self._members: list[str] = []
        self._members_until = 0.0
        self.stopping = asyncio.Event()

    def owns(self, partition: int) -> bool:
        if self.everyone:
            return True
        until = self._until.get(partition)
        return until is not None and self.clock() < until

    def owned(self) -> list[int]:
        return [p for p in range(self.count) if self.owns(p)]

    def reports(self, partition: int) -> bool:
        """Whether this replica is the one that reports `partition`'s gauges (backlog.py), so a
        `sum` over replicas counts each partition once: its owner with PARTITIONS above 1; with
        one (every replica works it), the member rendezvous hashing would give it to, among the
        members of the last heartbeat while that heartbeat is trusted. While membership changes,
        a partition may be reported twice or not at all for up to a heartbeat."""
        if not self.everyone:
            return self.owns(partition)
        if self.clock() >= self._members_until or not self._members:
            return False
        return owner_of(self._members, partition) == self.instance_id

    async def beat(self) -> None:
        """One heartbeat: membership, then take, renew or give up each partition, all at once
        (one round trip, whatever P), each on its own: a partition whose call fails keeps its
        old deadline and the others go on."""
        lease_ms = round(self.lease_s * 1000)
        beat_sent = self.clock()
        members = await self.store.heartbeat(self.instance_id, lease_ms)
        if self.instance_id not in members:  # it is: the heartbeat just wrote it
            members = [*members, self.instance_id]
        if self.everyone:  # membership only: every replica works the one partition
            self._members, self._members_until = members, beat_sent + self.lease_s * TRUSTED
            return
        mine = [p for p in range(self.count) if owner_of(members, p) == self.instance_id]
        gone = [p for p in self._until if p not in mine]
        for partition in gone:  # stop trusting before letting go
            del self._until[partition]
        sent = self.clock()
        claims = [self.store.claim(p, self.instance_id, lease_ms) for p in mine]
        releases = [self.store.release(p, self.instance_id) for p in gone]
        outcomes = await asyncio.gather(*claims, *releases, return_exceptions=True)
        gained = False
        for partition, held in zip(mine, outcomes[: len(mine)], strict=True):
            if isinstance(held, BaseException):
                log.warning("partition %d: lease not renewed (%s)", partition, held)
            elif held:
                gained |= not self.owns(partition)
                self._until[partition] = sent + self.lease_s * TRUSTED
            else:  # the previous owner has not let it go yet: next beat
                self._until.pop(partition, None)
        if gained:
            log.info("partitions owned: %s", self.owned(), extra={"members": len(members)})

    async def run(self) -> None:
        """Heartbeats until stopped. With one partition, membership only: every replica works
        it, and the membership shows `schedctl partitions migrate` that a scheduler runs."""
        while not self.stopping.is_set():
            await guarded_round("ownership", self.beat)
            await wait_event(self.stopping, self.lease_s / BEATS_PER_LEASE)

    async def leave(self, timeout_s: float = 2.0) -> None:
        """Shutting down: give every partition up and leave the membership at once, so the
        others take them on their next heartbeat instead of after a lease. Releases every
        partition (the script checks the owner: a claim whose reply was lost is let go too),
        all at once, within `timeout_s`; what is not released then expires with its lease."""
        self.stopping.set()
        self._until = {}
        self._members = []
        calls = [] if self.everyone else [self.store.release(p, self.instance_id) for p in range(self.count)]
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*calls, self.store.leave(self.instance_id), return_exceptions=True)
        except TimeoutError:
            log.warning("partitions not all released in %.1f s: they expire with their leases", timeout_s)
