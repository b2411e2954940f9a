"""Random ids for new tasks, executions and tokens, and the one retry when one is taken.

The store writes a new record only when its id is free and raises IdTaken otherwise; the
servicers draw a fresh id and try again a few times before giving up with ABORTED."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

from schedcore.errors import Aborted, IdTaken
from schedcore.store.keys import Partitions

T = TypeVar("T")

# Tries for a 64-bit id: three collisions in a row do not happen by chance.
ID_TRIES = 3


def new_id() -> str:
    """A new task or token id: 64 random bits, as 16 hex digits."""
    return secrets.token_hex(8)


def new_task_id(partitions: Partitions, partition: int | None = None) -> str:
    """A new task id in `partition` (None: a random one), 64 random bits less log2(PARTITIONS)."""
    if partition is None:
        partition = secrets.randbelow(partitions.count)
    return partitions.id_in(partition, secrets.randbits(64))


async def with_fresh_id(what: str, attempt: Callable[[], Awaitable[T]], tries: int = ID_TRIES) -> T:
    """`attempt()` (which draws its own id each call) until it does not raise IdTaken, at most
    `tries` times; then Aborted "could not allocate `what`; retry"."""
    for _ in range(tries):
        try:
            return await attempt()
        except IdTaken:
            continue
    raise Aborted(f"could not allocate {what}; retry")
