"""Tasks in Redis: one hash per task plus two lexicographic indexes (by name, by next run).

The hash separates what users own from what the engine owns:
- `spec`: the Task protobuf holding only user-owned fields; changed through the API, and each
  such change (and pause/resume) increments `rev`, which is the etag;
- `state`, `next` (padded ms of the next occurrence, absent when none), `last` (summary of the
  latest execution): runtime fields the scheduler may change without touching `rev`, so an
  engine firing a task never makes a user's etag stale;
- `nm`: the task's current name-index member, so scripts can remove it without decoding `spec`.
Every write is one Lua script: a task and its index entries never disagree.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import msgpack
from redis.asyncio import Redis

from schedcore import pb
from schedcore.errors import Aborted, IdTaken, NotFound
from schedcore.sealing import secret_maps
from schedcore.settings import NamespaceQuota
from schedcore.store.audit import NO_AUDIT_ARGS, AuditEntry
from schedcore.store.keys import DEFAULT_NAMESPACE, Partitions, name_member, next_member, pad_ms
from schedcore.store.quotas import NO_QUOTA, NOTHING, OverQuota, elsewhere, less, passed, share
from schedcore.store.scripts import Scripts
from schedcore.timeutil import ms_to_ts

_FIELDS = ("spec", "rev", "state", "next", "last", "pr")


class _Keep:
    """Sentinel: leave this field as it is."""


KEEP: Final = _Keep()


def redact(task: pb.Task) -> pb.Task:
    """`task` with its target's secret values (http secret headers and signing secrets, command
    secret env) emptied, names (and the number of signing secrets) kept: every api response
    carrying a task is built by StoredTask.to_proto, which calls this."""
    for _, values in secret_maps(task.target):
        for name in list(values):
            values[name] = ""
    return task


@dataclass(frozen=True)
class StoredTask:
    spec: pb.Task
    rev: int
    state: int
    next_ms: int | None
    last: bytes | None
    pause_reason: str = ""  # why the suite paused it itself (the hash's `pr`)

    @property
    def etag(self) -> str:
        return str(self.rev)

    @property
    def namespace(self) -> str:
        """Its namespace; "default" for a task stored before namespaces existed."""
        return self.spec.namespace or DEFAULT_NAMESPACE

    def to_proto(self) -> pb.Task:
        task = pb.Task()
        task.CopyFrom(self.spec)
        task.namespace = self.namespace
        task.state = self.state  # type: ignore[assignment]
        if self.next_ms is not None:
            task.next_run_time.CopyFrom(ms_to_ts(self.next_ms))
        if self.last:
            task.last_execution.ParseFromString(self.last)
        task.pause_reason = self.pause_reason
        task.etag = self.etag
        return redact(task)

    @classmethod
    def decode(cls, values: Sequence[bytes | None]) -> StoredTask | None:
        spec, rev, state, nxt, last, reason = values
        if spec is None or rev is None or state is None:
            return None
        return cls(
            spec=pb.Task.FromString(spec),
            rev=int(rev),
            state=int(state),
            next_ms=int(nxt) if nxt is not None else None,
            last=last,
            pause_reason=reason.decode() if reason else "",
        )


@dataclass(frozen=True)
class NewTask:
    spec: pb.Task  # with its id
    state: int
    next_ms: int | None
    request_key: str = ""
    fingerprint: str = ""


@dataclass(frozen=True)
class PriorTask:
    """The task an earlier create with the same request key made: the scripts reply
    "<task id>:<fingerprint>", parsed here only."""

    task_id: str
    fingerprint: str

    @classmethod
    def parse(cls, reply: bytes) -> PriorTask:
        task_id, sep, fingerprint = bytes(reply).decode().partition(":")
        if not sep:
            raise ValueError(f"a request key's reply {task_id!r} has no fingerprint")
        return cls(task_id, fingerprint)


class RequestConflict(Exception):
    """A request key was already used to create a task with different contents."""

    def __init__(self, index: int, prior: PriorTask) -> None:
        super().__init__(f"request {index}: key already used for task {prior.task_id}")
        self.index = index
        self.prior = prior


class TaskStore:
    """Tasks in every partition: a task's calls go to the partition its id names; listings and
    counts read them all."""

    def __init__(self, redis: Redis, partitions: Partitions, scripts: Scripts) -> None:
        self.redis = redis
        self.partitions = partitions
        self.scripts = scripts

    async def create(
        self,
        task_id: str,
        spec: pb.Task,
        state: int,
        next_ms: int | None,
        request_key: str = "",
        fingerprint: str = "",
        request_ttl_s: int = 0,
        audit: AuditEntry | None = None,
        quota: NamespaceQuota = NO_QUOTA,
    ) -> PriorTask | None:
        """Store a new task (and its audit event, when given). Returns None when created, or the
        task an earlier call with the same request key created (the caller checks its
        fingerprint). Raises OverQuota when it would take its namespace past `quota`
        (nothing is written). The request key must be in the task's partition (the caller drew
        the id in Partitions.of_request's)."""
        partition = self.partitions.of_task(task_id)
        k = self.partitions.all[partition]
        namespace = spec.namespace or DEFAULT_NAMESPACE
        raw = spec.SerializeToString()
        mine, others = await share(self.redis, self.partitions, partition, namespace, quota)
        result = await self.scripts.task_create(
            keys=[
                k.task(task_id),
                k.by_name,
                k.by_next,
                k.request_id(request_key or "-", spec.namespace),
                k.task_counts,
                k.audit,
                k.quota_tasks,
                k.quota_bytes,
            ],
            args=[
                task_id,
                raw,
                state,
                pad_ms(next_ms) if next_ms is not None else "",
                name_member(spec.name, task_id),
                fingerprint if request_key else "",
                request_ttl_s,
                namespace,
                mine.max_tasks,
                mine.max_task_bytes,
                *(audit.args() if audit is not None else NO_AUDIT_ARGS),
            ],
        )
        if result[0] == b"quota":
            which = bytes(result[1]).decode()
            adding = 1 if which == "tasks" else len(raw)
            raise passed(which, namespace, quota, others, int(result[2]), adding, "created")
        if result[0] == b"dup":
            return PriorTask.parse(result[1])
        if result[0] == b"collision":  # 64 random bits collided: the caller picks a new id
            raise IdTaken(task_id)
        return None

    async def create_many(
        self,
        items: Sequence[NewTask],
        request_ttl_s: int,
        audit: AuditEntry | None = None,
        quota: Callable[[str], NamespaceQuota] = lambda namespace: NO_QUOTA,
    ) -> list[PriorTask | None]:
        """Store new tasks, all or none. Per task: None when created, or the task an earlier call
        with the same request key created (same contents). With
        `audit`, each created task gets an event with those fields plus its id and namespace.

        Raises RequestConflict when a request key was used for different contents,
        IdTaken(index) when a generated id collides, OverQuota when the new tasks would
        take a namespace past `quota(namespace)`; nothing is written then.

        All the tasks are in one partition (the caller draws their ids there), so the batch is
        one script: all or none, as with one partition (docs/partitions.md, "BatchCreateTasks")."""
        partition = self.partitions.of_task(items[0].spec.id)
        if any(self.partitions.of_task(item.spec.id) != partition for item in items):
            raise ValueError("a batch's task ids must all be in one partition")
        k = self.partitions.all[partition]
        namespaces = {item.spec.namespace or DEFAULT_NAMESPACE for item in items}
        used = await elsewhere(self.redis, self.partitions, partition, namespaces)
        limits = {ns: less(quota(ns), used[ns]) for ns in namespaces}
        rows = [
            [
                item.spec.id,
                item.spec.SerializeToString(),
                str(item.state),
                pad_ms(item.next_ms) if item.next_ms is not None else "",
                name_member(item.spec.name, item.spec.id),
                item.fingerprint if item.request_key else "",
                item.spec.namespace or DEFAULT_NAMESPACE,
                *_limits(limits[item.spec.namespace or DEFAULT_NAMESPACE]),
            ]
            for item in items
        ]
        keys = [k.by_name, k.by_next, k.task_counts, *(k.task(item.spec.id) for item in items)]
        keys += [k.request_id(item.request_key, item.spec.namespace) for item in items if item.request_key]
        keys += [k.quota_tasks, k.quota_bytes, k.audit]
        args = [
            request_ttl_s,
            msgpack.packb(rows, use_bin_type=False),
            *(audit.args() if audit is not None else NO_AUDIT_ARGS),
        ]
        result = await self.scripts.task_create_many(keys=keys, args=args)
        if result[0] == b"conflict":
            raise RequestConflict(int(result[1]), PriorTask.parse(result[2]))
        if result[0] == b"collision":
            raise IdTaken(int(result[1]))
        if result[0] == b"quota":
            which, namespace = bytes(result[1]).decode(), bytes(result[2]).decode()
            raise passed(
                which, namespace, quota(namespace), used[namespace], int(result[3]), int(result[4]), "created"
            )
        return [PriorTask.parse(r) if r else None for r in result[1:]]

    async def get(self, task_id: str) -> StoredTask:
        row: list[bytes | None] = await self.redis.hmget(self.partitions.task(task_id).task(task_id), _FIELDS)  # type: ignore[assignment]
        found = StoredTask.decode(row)
        if found is None:
            raise NotFound(f"task {task_id!r} not found")
        return found

    async def get_many(self, task_ids: Sequence[str]) -> list[StoredTask | None]:
        if not task_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hmget(self.partitions.task(task_id).task(task_id), _FIELDS)
            rows = await pipe.execute()
        return [StoredTask.decode(row) for row in rows]

    async def write(
        self,
        task_id: str,
        expected_rev: int | None,
        *,
        spec: pb.Task | None = None,
        state: int | None = None,
        next_ms: int | _Keep | None = KEEP,
        audit: AuditEntry | None = None,
        quota: NamespaceQuota = NO_QUOTA,
        reason: str = "",
    ) -> int:
        """Compare-and-set: apply the changes if the task's rev is still `expected_rev`.
        `reason`: why the state changes, when the suite changes it itself (pause_reason).

        Returns the new rev. Raises NotFound, Aborted when the rev moved on, or OverQuota when a
        larger spec would take the task's namespace past `quota` (nothing is written then)."""
        partition = self.partitions.of_task(task_id)
        k = self.partitions.all[partition]
        namespace = (spec.namespace or DEFAULT_NAMESPACE) if spec is not None else ""
        mine, used = quota, NOTHING
        if spec is not None:
            mine, used = await share(self.redis, self.partitions, partition, namespace, quota)
        if isinstance(next_ms, _Keep):
            next_arg = ""
        else:
            next_arg = "-" if next_ms is None else pad_ms(next_ms)
        result = await self.scripts.task_write(
            keys=[k.task(task_id), k.by_name, k.by_next, k.task_counts, k.audit, k.quota_bytes],
            args=[
                task_id,
                "" if expected_rev is None else str(expected_rev),
                spec.SerializeToString() if spec is not None else "",
                "" if state is None else str(state),
                next_arg,
                name_member(spec.name, task_id) if spec is not None else "",
                mine.max_task_bytes,
                reason,
                *(audit.args() if audit is not None else NO_AUDIT_ARGS),
            ],
        )
        if result[0] == b"quota":
            assert spec is not None
            raise passed("bytes", namespace, quota, used, int(result[2]), int(result[3]), "changed")
        return self._check(task_id, result)

    async def delete(self, task_id: str, expected_rev: int | None, audit: AuditEntry | None = None) -> None:
        k = self.partitions.task(task_id)
        result = await self.scripts.task_delete(
            keys=[
                k.task(task_id),
                k.by_name,
                k.by_next,
                k.task_counts,
                k.audit,
                k.quota_tasks,
                k.quota_bytes,
                k.task_active(task_id),
                k.ready,
            ],
            args=[
                task_id,
                "" if expected_rev is None else str(expected_rev),
                *(audit.args() if audit is not None else NO_AUDIT_ARGS),
            ],
        )
        self._check(task_id, result)

    @staticmethod
    def _check(task_id: str, result: list[bytes]) -> int:
        if result[0] == b"missing":
            raise NotFound(f"task {task_id!r} not found")
        if result[0] == b"conflict":
            raise Aborted(f"task {task_id!r} was changed concurrently (etag is now {int(result[1])})")
        return int(result[1]) if len(result) > 1 else 0

    async def scan(self, by_next: bool, after: str | None, count: int) -> list[str]:
        """Up to `count` index members strictly after `after` (None: from the start), over every
        partition. Members are unique and order the same way (bytewise) in each, so one cursor
        serves them all: each is read after it, and the first `count` of the merge are kept."""
        low = b"-" if after is None else b"(" + after.encode()
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in self.partitions.all:
                pipe.zrangebylex(keys.by_next if by_next else keys.by_name, low, b"+", start=0, num=count)
            runs: list[list[bytes]] = await pipe.execute()
        members = runs[0] if len(runs) == 1 else heapq.merge(*runs)
        return [m.decode() for m in itertools.islice(members, count)]

    async def count(self) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in self.partitions.all:
                pipe.zcard(keys.by_name)
            return sum(int(n) for n in await pipe.execute())


def _limits(quota: NamespaceQuota) -> tuple[int, int]:
    return quota.max_tasks, quota.max_task_bytes


def member_task_id(member: str, by_next: bool) -> str:
    """The task id at the end of an index member."""
    return member.rsplit(":", 1)[1] if by_next else member.rsplit("\x00", 1)[1]


__all__ = [
    "KEEP",
    "NewTask",
    "OverQuota",
    "PriorTask",
    "RequestConflict",
    "StoredTask",
    "TaskStore",
    "member_task_id",
    "next_member",
]
