"""The audit trail in Redis: one stream per partition, appended by the same Lua script as the
change it records (a task's and its executions' events in the task's partition, token events in
partition 0).

An entry's id is the store's time ("<ms>-<seq>"), so events list in the order they happened and
time filters are id ranges. Across partitions events sort by (entry id, partition); the event id
a client sees names both (event_id below): "<ms>-<seq>" in partition 0, as before partitions
existed, "<ms>-<seq>-<partition>" in the others.

Fields (only those that apply are written, to keep XADD cheap): a (AuditAction number), actor
(token name), atid (token id), ns (namespace acted in), task, exec (execution id), tok (token id
acted on), chan (notification channel acted on), mask (UpdateTask's paths, comma-separated), rid
(the call's request id).

Scripts take the stream as their last key and, after their own arguments, the stream's maximum
length (approximate trimming: MAXLEN ~) followed by the event's field/value pairs; an empty
maximum length means "record nothing" (the engine and tests call the same scripts).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from google.protobuf.field_mask_pb2 import FieldMask
from redis.asyncio import Redis

from schedcore import pb
from schedcore.store.keys import Partitions
from schedcore.timeutil import ms_to_ts


@dataclass(frozen=True)
class Actor:
    """Who makes a change: the caller's token (empty name and id without authentication) and the
    call's request id."""

    name: str = ""
    token_id: str = ""
    request_id: str = ""

    def fields(self) -> list[str]:
        out: list[str] = []
        for field, value in (("actor", self.name), ("atid", self.token_id), ("rid", self.request_id)):
            if value:
                out += [field, value]
        return out


@dataclass(frozen=True)
class AuditEntry:
    """One event to append, as a script's extra arguments: the stream's bound, then fields."""

    max_events: int
    fields: tuple[str, ...]

    @classmethod
    def of(
        cls,
        max_events: int,
        action: int,
        actor: Actor,
        *,
        namespace: str = "",
        task_id: str = "",
        execution_id: str = "",
        token_id: str = "",
        channel_id: str = "",
        update_mask: Sequence[str] = (),
        reason: str = "",
    ) -> AuditEntry:
        out = ["a", str(int(action)), *actor.fields()]
        for field, value in (
            ("ns", namespace),
            ("task", task_id),
            ("exec", execution_id),
            ("tok", token_id),
            ("chan", channel_id),
            ("mask", ",".join(update_mask)),
            ("why", reason),
        ):
            if value:
                out += [field, value]
        return cls(max_events, tuple(out))

    def args(self) -> list[str]:
        return [str(self.max_events), *self.fields]


# What a script gets when there is nothing to record.
NO_AUDIT_ARGS = [""]


# An event id: a stream entry id, then the partition unless it is 0 (without leading zeros).
_EVENT_ID = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})(?:-([1-9][0-9]{0,2}))?$")
_U64 = (1 << 64) - 1

# Where an event sorts: (ms, seq, partition); the trail lists them in descending order.
Position = tuple[int, int, int]


def event_id(entry_id: str, partition: int) -> str:
    """The id clients see for the entry `entry_id` ("<ms>-<seq>") of partition `partition`'s
    stream: unique across partitions, and the cursor of a page that ends at it."""
    return entry_id if partition == 0 else f"{entry_id}-{partition}"


def parse_event_id(value: str, partitions: int) -> Position | None:
    """(ms, seq, partition) of an event id of a deployment with `partitions` partitions; None
    when it is not one (an id of partition 0 never carries "-0": each event has one id)."""
    match = _EVENT_ID.match(value)
    if not match:
        return None
    ms, seq, partition = int(match[1]), int(match[2]), int(match[3] or 0)
    if ms > _U64 or seq > _U64 or partition >= partitions:
        return None
    return ms, seq, partition


def decode(event_id: str, raw: dict[bytes, bytes]) -> pb.AuditEvent:
    """The AuditEvent of a stream entry, given its event id (event_id()) and fields."""
    f = {k.decode(): v.decode() for k, v in raw.items()}
    event = pb.AuditEvent(
        id=event_id,
        action=int(f.get("a", "0")),  # type: ignore[arg-type]
        actor=f.get("actor", ""),
        actor_token_id=f.get("atid", ""),
        namespace=f.get("ns", ""),
        task_id=f.get("task", ""),
        execution_id=f.get("exec", ""),
        token_id=f.get("tok", ""),
        channel_id=f.get("chan", ""),
        request_id=f.get("rid", ""),
        reason=f.get("why", ""),
    )
    event.time.CopyFrom(ms_to_ts(int(event_id.split("-", 1)[0])))
    if f.get("mask"):
        event.update_mask.CopyFrom(FieldMask(paths=f["mask"].split(",")))
    return event


class AuditStore:
    """Reads the partitions' audit streams as one trail, newest first."""

    def __init__(self, redis: Redis, partitions: Partitions) -> None:
        self.redis = redis
        self.partitions = partitions

    async def append(self, partition: int, entry: AuditEntry) -> None:
        """Append an event on its own, for a change made by many scripts (BackfillTask: one
        event for its executions, written after them)."""
        fields = dict(zip(entry.fields[::2], entry.fields[1::2], strict=True))
        keys = self.partitions.all[partition]
        await self.redis.xadd(keys.audit, fields, maxlen=entry.max_events, approximate=True)  # type: ignore[arg-type]

    def parse(self, event_id: str) -> Position | None:
        """Where the event `event_id` sorts, or None when it is not an id of this deployment."""
        return parse_event_id(event_id, self.partitions.count)

    async def scan(
        self, before: str | None, start_ms: int | None, end_ms: int | None, count: int
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """Up to `count` (event id, fields), newest first, with start_ms <= time < end_ms,
        strictly after the event `before` in that order (None: from the newest).

        The order is (entry id, partition), descending: after the event (id, p), partition q
        is read from below id (exclusive) when q >= p and from id itself (inclusive) when q < p,
        so equal entry ids in several partitions are neither repeated nor skipped. Every
        partition is read up to `count` in one pipeline (at one partition: one XREVRANGE, as
        before partitions existed) and the runs are merged: fewer than `count` rows means the
        trail ends there."""
        cursor = None
        if before is not None:
            cursor = self.parse(before)
            if cursor is None:
                raise ValueError(f"not an audit event id: {before!r}")
        low = f"{start_ms}-0" if start_ms is not None else "-"
        async with self.redis.pipeline(transaction=False) as pipe:
            for q, keys in enumerate(self.partitions.all):
                if cursor is not None:
                    ms, seq, p = cursor
                    high = f"{ms}-{seq}" if q < p else f"({ms}-{seq}"
                elif end_ms is not None:
                    high = f"({end_ms}-0"
                else:
                    high = "+"
                pipe.xrevrange(keys.audit, high, low, count=count)
            runs: list[list[tuple[bytes, dict[bytes, bytes]]]] = await pipe.execute()

        merged = heapq.merge(
            *(_positioned(q, run) for q, run in enumerate(runs)), key=_position, reverse=True
        )
        out: list[tuple[str, dict[bytes, bytes]]] = []
        for (_, _, q), entry_id, fields in merged:
            if len(out) == count:
                break
            out.append((event_id(entry_id, q), fields))
        return out


_Row = tuple[Position, str, dict[bytes, bytes]]


def _positioned(partition: int, run: list[tuple[bytes, dict[bytes, bytes]]]) -> Iterator[_Row]:
    """A partition's entries (newest first) with where each sorts in the trail."""
    for entry_id, fields in run:
        ms, seq = entry_id.split(b"-", 1)
        yield (int(ms), int(seq), partition), entry_id.decode(), fields


def _position(row: _Row) -> Position:
    return row[0]
