"""The audit trail in Redis: one stream, appended by the same Lua script as the change it records.

An entry's id is the store's time ("<ms>-<seq>"), so events list in the order they happened and
time filters are id ranges. Fields (only those that apply are written, to keep XADD cheap):
a (AuditAction number), actor (token name), atid (token id), ns (namespace acted in), task,
exec (execution id), tok (token id acted on), mask (UpdateTask's paths, comma-separated),
rid (the call's request id).

Scripts take the stream as their last key and, after their own arguments, the stream's maximum
length (approximate trimming: MAXLEN ~) followed by the event's field/value pairs; an empty
maximum length means "record nothing" (the engine and tests call the same scripts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.field_mask_pb2 import FieldMask
from redis.asyncio import Redis

from schedcore import pb
from schedcore.store.keys import Keys
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
        update_mask: Sequence[str] = (),
    ) -> AuditEntry:
        out = ["a", str(int(action)), *actor.fields()]
        for field, value in (
            ("ns", namespace),
            ("task", task_id),
            ("exec", execution_id),
            ("tok", token_id),
            ("mask", ",".join(update_mask)),
        ):
            if value:
                out += [field, value]
        return cls(max_events, tuple(out))

    def args(self) -> list[str]:
        return [str(self.max_events), *self.fields]


# What a script gets when there is nothing to record.
NO_AUDIT_ARGS = [""]


def decode(entry_id: bytes, raw: dict[bytes, bytes]) -> pb.AuditEvent:
    f = {k.decode(): v.decode() for k, v in raw.items()}
    event = pb.AuditEvent(
        id=entry_id.decode(),
        action=int(f.get("a", "0")),  # type: ignore[arg-type]
        actor=f.get("actor", ""),
        actor_token_id=f.get("atid", ""),
        namespace=f.get("ns", ""),
        task_id=f.get("task", ""),
        execution_id=f.get("exec", ""),
        token_id=f.get("tok", ""),
        request_id=f.get("rid", ""),
    )
    event.time.CopyFrom(ms_to_ts(int(entry_id.split(b"-", 1)[0])))
    if f.get("mask"):
        event.update_mask.CopyFrom(FieldMask(paths=f["mask"].split(",")))
    return event


class AuditStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def scan(
        self, before: str | None, start_ms: int | None, end_ms: int | None, count: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to `count` entries, newest first, with start_ms <= time < end_ms, strictly older
        than the entry `before` (None: from the newest)."""
        if before is not None:
            high = "(" + before
        elif end_ms is not None:
            high = "(" + f"{end_ms}-0"
        else:
            high = "+"
        low = f"{start_ms}-0" if start_ms is not None else "-"
        rows: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrevrange(  # type: ignore[assignment]
            self.keys.audit, high, low, count=count
        )
        return rows
