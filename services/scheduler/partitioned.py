"""The scheduler across partitions (docs/partitions.md, "Schedulers share partitions"): a batch
grouped by the partition its executions live in, one call per partition touched, and credits
shared fairly among partitions that have work.

Every engine script touches one partition's keys (one Redis Cluster slot), so a batch spanning
partitions becomes one call per partition. With one partition these helpers make exactly the
calls the code made before partitions existed: one group, awaited directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from schedcore.store import Store
from schedcore.store.engine import EngineStore
from schedcore.store.keys import EXECUTION_ID

T = TypeVar("T")


def by_partition(store: Store, ids: Sequence[str]) -> list[tuple[EngineStore, list[int]]]:
    """The positions of `ids` (execution ids) grouped by the partition holding each, with that
    partition's engine; partitions in order, positions in the order given. No ids: no group."""
    if not ids:
        return []
    if len(store.engines) == 1:
        return [(store.engine, list(range(len(ids))))]
    groups: dict[int, list[int]] = {}
    for i, execution_id in enumerate(ids):
        # An id an executor garbled names no partition: partition 0's script finds no such
        # execution and answers as it would with one partition (never an error on the stream).
        place = store.partitions.of_execution(execution_id) if EXECUTION_ID.match(execution_id) else 0
        groups.setdefault(place, []).append(i)
    return [(store.engines[p], groups[p]) for p in sorted(groups)]


async def per_partition(
    store: Store, ids: Sequence[str], call: Callable[[EngineStore, list[int]], Awaitable[T]]
) -> list[tuple[list[int], T]]:
    """`call(engine, positions)` once per partition holding some of `ids` (execution ids),
    concurrently (each): (positions, result) per partition, in partition order. With one
    partition: one call with every position, the call made before partitions existed."""
    groups = by_partition(store, ids)
    results = await each([call(engine, at) for engine, at in groups])
    return [(at, result) for (_, at), result in zip(groups, results, strict=True)]


async def each(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Await one call per partition, concurrently when there are several (one round trip of
    latency, not one per partition). Every call has ended when this returns or raises (the first
    failure is raised), so none is left running behind a failed round."""
    if len(calls) == 1:
        return [await calls[0]]
    if not calls:
        return []
    done = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
    return done  # type: ignore[return-value]  # no exception left in it


def fair_split(credits: int, wants: Sequence[int], start: int = 0) -> list[int]:
    """Share `credits` among partitions wanting `wants[p]` each: every partition with work gets
    an equal share (never more than it wants), what a partition leaves goes to the others, and
    the remainder of an uneven split goes first to the partitions from `start` on (rotate it
    each round, so one credit among three busy partitions serves each in turn)."""
    n = len(wants)
    out = [0] * n
    left = credits
    open_ = [(start + j) % n for j in range(n) if wants[(start + j) % n] > 0]
    while left > 0 and open_:
        each_, extra = divmod(left, len(open_))
        still: list[int] = []
        for j, p in enumerate(open_):
            give = min(wants[p] - out[p], each_ + (j < extra))
            out[p] += give
            left -= give
            if out[p] < wants[p]:
                still.append(p)
        open_ = still
    return out
