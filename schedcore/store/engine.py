"""The scheduler's side of the store: firing due occurrences, dispatch leases, fenced results.

Every operation is a Lua script deciding by the Redis server's clock (TIME inside the script).
Operations on keys not known in advance take two steps: a read-only peek (peek_due.lua) that
names the candidates, then a script that receives their ids (and the key prefixes that make
their keys: docs/redis-layout.md, "Keys a script builds") and re-checks each one
atomically (firing: a compare-and-set of what was read), so concurrent replicas never take the
same item. The invariants are listed in docs/engine.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import msgpack
from redis.asyncio import Redis

from schedcore import pb
from schedcore.store.alerts import alert_args, raised_keys, rule_arg
from schedcore.store.executions import summary
from schedcore.store.keys import DEFAULT_NAMESPACE, Keys, history_member, pad_ms, task_of_execution
from schedcore.store.scripts import Scripts
from schedcore.store.stats import lag_bucket, minute_of
from schedcore.timeutil import duration_to_ms

PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING
RUNNING = pb.ExecutionStatus.EXECUTION_STATUS_RUNNING
# How much of an execution's status message a FAILING alert quotes.
ALERT_MESSAGE_CHARS = 300
ALLOW = (pb.OverlapPolicy.OVERLAP_POLICY_UNSPECIFIED, pb.OverlapPolicy.OVERLAP_POLICY_ALLOW)
# What fire_commit.lua calls each overlap policy that holds a run back.
OVERLAP_RULES = {
    pb.OverlapPolicy.OVERLAP_POLICY_SKIP: "skip",
    pb.OverlapPolicy.OVERLAP_POLICY_BUFFER_ONE: "buffer",
    pb.OverlapPolicy.OVERLAP_POLICY_CANCEL_OTHER: "cancel",
}


def overlap_rule(overlap: pb.Overlap) -> list[str | int] | str:
    """An overlap rule as fire_commit.lua takes it: [policy, max concurrent], or "" for none
    (ALLOW with no limit: nothing to check)."""
    policy, limit = overlap.policy, overlap.max_concurrent
    if policy in ALLOW:
        return ["skip", limit] if limit else ""
    return [OVERLAP_RULES[policy], limit or 1]


def overlap_arg(overlap: pb.Overlap) -> str:
    """The rule as execution_create.lua takes it: "<policy>:<limit>", or "" for none."""
    rule = overlap_rule(overlap)
    return f"{rule[0]}:{rule[1]}" if rule else ""


@dataclass(frozen=True)
class DueTask:
    """A due task as read for firing; fire_commit compares `next` and `srev` with these."""

    task_id: str
    nominal_ms: int
    spec: pb.Task
    srev: str  # schedule revision when read


@dataclass(frozen=True)
class FireCommit:
    """What firing one due task writes: its records and its following occurrence."""

    task: DueTask
    records: Sequence[pb.Execution]
    next_ms: int | None
    state: int
    ready_at_ms: int
    deferred_until_ms: int | None = None  # set: not planned; nothing written, read again then
    waits: bool = False  # its run may not start before ready_at_ms: queued, not leased as it fires

    @classmethod
    def deferred(cls, task: DueTask, until_ms: int) -> FireCommit:
        """A task that could not be planned: its index entry comes due again at `until_ms`."""
        return cls(task, [], None, 0, 0, until_ms)


@dataclass(frozen=True)
class Fired:
    """What committing one fire wrote: records created (-1: a conflict, the task had moved since
    it was read), how many of them were queued to run (the others: SKIPPED), and of those how
    many were leased to the caller as they fired (0 or 1: the run)."""

    created: int
    queued: int
    leased: int = 0


@dataclass(frozen=True)
class Completed:
    """What complete wrote: per completion whether it was recorded (False: its lease had moved
    on), and the tasks whose history outgrew the limit it was given."""

    recorded: list[bool]
    over_limit: list[str]
    # (task id, failures in a row, the last one's execution id) of tasks to pause
    failing: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(self.recorded)


@dataclass(frozen=True)
class Renewed:
    """What renew extended: how many leases, and (id, token, reason) of the executions among
    them that are being cancelled: their executor must stop them."""

    count: int
    cancels: list[tuple[str, int, str]]


@dataclass(frozen=True)
class Reclaimed:
    """What reclaim took back: ids queued again; (id, token) of those lost too often, and
    (id, token, reason) of those being cancelled, both now leased to the caller to end (FAILED,
    CANCELLED) through complete."""

    queued: list[str]
    failed: list[tuple[str, int]]
    cancelled: list[tuple[str, int, str]]


@dataclass(frozen=True)
class DispatchItem:
    execution: pb.Execution
    token: int
    spec: pb.Task | None  # None: the task was deleted


@dataclass(frozen=True)
class Completion:
    """The new record of an execution whose attempt ended (retry_at_ms set: it goes again)."""

    execution: pb.Execution
    token: int
    retry_at_ms: int | None
    summary: pb.ExecutionSummary | None
    pause_after: int = 0  # the task's pause_after_failures (0: never)
    alert: str = ""  # the task's alert rule (schedcore/store/alerts.py, rule_arg; "": none)


class EngineStore:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts, declare_items: bool = False) -> None:
        """`declare_items` (Redis Cluster): the keys a script builds from a prefix are declared
        in its KEYS too, after the ones it reads there (it builds them all the same), so that
        while the partition's slot migrates Redis answers TRYAGAIN or ASK before the script runs
        where some are missing, instead of failing it halfway through ("non local key")."""
        self.redis = redis
        self.keys = keys
        self.scripts = scripts
        self.declare_items = declare_items

    def _items(self, keys: Sequence[str]) -> list[str]:
        """`keys` to declare after a script's own (once each), or none without a cluster."""
        return list(dict.fromkeys(keys)) if self.declare_items else []

    async def peek(self, key: str, *, lex: bool, limit: int) -> tuple[int, list[str], int | None]:
        """(now, due members oldest first, ms when the next one comes due or None)."""
        now, due, later = await self.scripts.peek_due(keys=[key], args=["lex" if lex else "score", limit])
        return int(now), [m.decode() for m in due], (int(later) if int(later) >= 0 else None)

    async def read_due(self, limit: int, spread: float = 0.0) -> tuple[int, list[DueTask], int | None]:
        """(now, up to `limit` due tasks, ms when the next one comes due or None). `spread` in
        [0, 1) starts that far into the due entries past the first `limit` (peek_due.lua)."""
        now, members, later = await self.scripts.peek_due(
            keys=[self.keys.by_next], args=["lex", limit, repr(spread)]
        )
        ids = [m.split(b":", 1)[1].decode() for m in members]
        due: list[DueTask] = []
        if ids:
            keys = [self.keys.by_next, *self._items([self.keys.task(i) for i in ids])]
            rows = await self.scripts.fire_read(keys=keys, args=[self.keys.task_prefix, *ids])
            for task_id, (nxt, spec, srev) in zip(ids, rows, strict=True):
                if nxt is not None and spec is not None and int(nxt) <= int(now):
                    due.append(DueTask(task_id, int(nxt), pb.Task.FromString(spec), srev.decode()))
        return int(now), due, (int(later) if int(later) >= 0 else None)

    async def commit_fire(
        self, commits: Sequence[FireCommit], now_ms: int, lease: Sequence[bool] = (), lease_ms: int = 0
    ) -> list[Fired]:
        """Commit each fire by compare-and-set (fire_commit.lua): what each one wrote. A commit
        whose `lease` flag is set (same order as `commits`; missing: not set) creates its run
        leased to the caller for `lease_ms`, token 1 (docs/engine.md, "Leased as it fires")."""
        if not commits:
            return []
        k = self.keys
        keys = [k.by_next, k.ready, k.history, k.task_counts, k.minute_stats(minute_of(now_ms)), k.inflight]
        keys.append(k.ready_command)
        rows = []
        flags = [*lease, *([False] * (len(commits) - len(lease)))]
        rules = {
            c.task.task_id: rule_arg(c.task.spec.alerts, c.task.spec.namespace or DEFAULT_NAMESPACE)
            for c in commits
        }
        for c, leased in zip(commits, flags, strict=True):
            rows.append(
                [
                    c.task.task_id,
                    pad_ms(c.task.nominal_ms),
                    c.task.srev,
                    pad_ms(c.next_ms) if c.next_ms is not None else "",
                    str(c.state),
                    summary(c.records[0]).SerializeToString() if c.records else "",
                    c.ready_at_ms,
                    [
                        [r.id, r.SerializeToString(), str(int(r.status)), history_member(r.id)]
                        for r in c.records
                    ],
                    pad_ms(c.deferred_until_ms) if c.deferred_until_ms is not None else "",
                    "1" if leased else "",
                    overlap_rule(c.task.spec.overlap),
                    rules[c.task.task_id],
                ]
            )
        packed = msgpack.packb(rows, use_bin_type=False)
        prefixes = [k.task_prefix, k.task_history_prefix, k.execution_prefix, k.task_active_prefix]
        if self.declare_items:
            for c in commits:
                keys.append(k.task(c.task.task_id))
                if c.records:
                    keys += [k.task_history(c.task.task_id), k.task_active(c.task.task_id)]
                    keys += [k.execution(r.id) for r in c.records]
                    if rule := rules[c.task.task_id]:
                        keys += [
                            k.alert_watch,
                            *raised_keys(k, rule, ("skipped",), [r.id for r in c.records]),
                        ]
        prefixes += [*alert_args(k), k.alert_watch]
        replies = await self.scripts.fire_commit(keys=keys, args=[packed, lease_ms, *prefixes])
        return [Fired(int(created), int(queued), int(leased)) for created, queued, leased in replies]

    async def lease_ready(
        self, limit: int, lease_ms: int, candidates: Sequence[str] | None = None, *, queue: str = ""
    ) -> list[DispatchItem]:
        """Lease up to `limit` ready executions from `queue` (default the ready queue);
        `candidates` (ids a peek just returned) saves the peek. The script re-checks each one,
        so stale candidates are harmless."""
        queue = queue or self.keys.ready
        if candidates is None:
            _, ids, _ = await self.peek(queue, lex=False, limit=limit)
        else:
            ids = list(candidates[:limit])
        if not ids:
            return []
        keys = [queue, self.keys.inflight]
        keys += self._items(
            [key for i in ids for key in (self.keys.execution(i), self.keys.task(task_of_execution(i)))]
        )
        prefixes = [self.keys.execution_prefix, self.keys.task_prefix]
        rows = await self.scripts.dispatch_lease(keys=keys, args=[lease_ms, *prefixes, *ids])
        items = []
        for row in rows:
            execution = pb.Execution.FromString(row[2])
            execution.status = RUNNING
            spec = pb.Task.FromString(row[3]) if row[3] else None
            items.append(DispatchItem(execution, int(row[1]), spec))
        return items

    async def park(self, leases: Sequence[tuple[str, int]]) -> int:
        """Leased executions no linked executor can run: to the command ready queue, PENDING,
        fenced by their tokens (dispatch_park.lua). Returns how many moved."""
        if not leases:
            return 0
        keys = [self.keys.inflight, self.keys.ready_command, *(self.keys.execution(i) for i, _ in leases)]
        args: list[str | int] = []
        for execution_id, token in leases:
            args += [execution_id, token]
        return int(await self.scripts.dispatch_park(keys=keys, args=args))

    async def publish_capabilities(self, names: Sequence[str], ttl_ms: int) -> None:
        """Vouch, for `ttl_ms` of the Redis clock, that an executor running `names` is linked."""
        if names:
            now = await self._now_ms()
            await self.redis.hset(self.keys.capabilities, mapping={n: now + ttl_ms for n in names})

    async def capability_available(self, name: str) -> bool:
        """Whether some scheduler vouched for an executor running `name` until after now."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.hget(self.keys.capabilities, name)
            (seconds, micros), until = await pipe.execute()
        return until is not None and int(until) > int(seconds) * 1000 + int(micros) // 1000

    async def _now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def records(self, ids: Sequence[str]) -> list[tuple[pb.Execution | None, pb.Task | None]]:
        """Current record and task spec of each execution (for building results)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for execution_id in ids:
                pipe.hget(self.keys.execution(execution_id), "pb")
                pipe.hget(self.keys.task(task_of_execution(execution_id)), "spec")
            raw = await pipe.execute()
        out: list[tuple[pb.Execution | None, pb.Task | None]] = []
        for i in range(0, len(raw), 2):
            out.append(
                (
                    pb.Execution.FromString(raw[i]) if raw[i] else None,
                    pb.Task.FromString(raw[i + 1]) if raw[i + 1] else None,
                )
            )
        return out

    async def complete(
        self, completions: Sequence[Completion], now_ms: int, history_limit: int = 0
    ) -> Completed:
        """Write ended attempts whose token still holds (dispatch_complete.lua): per completion
        whether it was recorded (False: its lease had moved on), and the tasks whose history now
        holds more than `history_limit` executions (0: not checked). Executions that ended for
        good count in the stats of `now_ms`'s minute."""
        if not completions:
            return Completed([], [])
        k = self.keys
        keys = [k.inflight, k.ready, k.minute_stats(minute_of(now_ms))]
        keys += self._items(
            [
                key
                for c in completions
                for task_id in (task_of_execution(c.execution.id),)
                for key in (
                    k.execution(c.execution.id),
                    k.task(task_id),
                    k.task_history(task_id),
                    k.task_active(task_id),
                    *raised_keys(k, c.alert, ("failing", "recovered"), [c.execution.id]),
                )
            ]
        )
        rows = []
        for c in completions:
            e = c.execution
            final = c.retry_at_ms is None and e.status != PENDING
            lag = str(lag_bucket(duration_to_ms(e.lag))) if final and e.HasField("lag") else ""
            rows.append(
                [
                    e.id,
                    str(c.token),
                    str(int(e.status)),
                    e.SerializeToString(),
                    "" if c.retry_at_ms is None else c.retry_at_ms,
                    c.summary.SerializeToString() if c.summary is not None else "",
                    str(int(e.status)) if final else "",
                    lag,
                    str(c.pause_after) if c.pause_after else "",
                    c.alert,
                    e.status_message[:ALERT_MESSAGE_CHARS] if c.alert else "",
                ]
            )
        flags, over, failing = await self.scripts.dispatch_complete(
            keys=keys,
            args=[
                history_limit,
                msgpack.packb(rows, use_bin_type=False),
                k.execution_prefix,
                k.task_prefix,
                k.task_history_prefix,
                k.task_active_prefix,
                *alert_args(k),
            ],
        )
        return Completed(
            [flag == ord("1") for flag in flags],
            [t.decode() for t in over],
            [(t.decode(), int(n), e.decode()) for t, n, e in failing],
        )

    async def renew(self, leases: Sequence[tuple[str, int]], lease_ms: int) -> Renewed:
        """Extend the leases whose tokens hold (dispatch_renew.lua): how many, and those of them
        whose execution is being cancelled (the holder tells their executor to stop them)."""
        if not leases:
            return Renewed(0, [])
        keys = [self.keys.inflight, *(self.keys.execution(i) for i, _ in leases)]
        args: list[str | int] = [lease_ms]
        for execution_id, token in leases:
            args += [execution_id, token]
        renewed, cancels = await self.scripts.dispatch_renew(keys=keys, args=args)
        return Renewed(int(renewed), [(i.decode(), int(t), r.decode()) for i, t, r in cancels])

    async def reclaim(self, limit: int, max_losses: int, lease_ms: int) -> Reclaimed:
        """Take back expired leases (dispatch_reclaim.lua)."""
        _, ids, _ = await self.peek(self.keys.inflight, lex=False, limit=limit)
        if not ids:
            return Reclaimed([], [], [])
        keys = [self.keys.inflight, self.keys.ready, *(self.keys.execution(i) for i in ids)]
        queued, failed, cancelled = await self.scripts.dispatch_reclaim(
            keys=keys, args=[max_losses, lease_ms, *ids]
        )
        return Reclaimed(
            [i.decode() for i in queued],
            [(i.decode(), int(t)) for i, t in failed],
            [(i.decode(), int(t), r.decode()) for i, t, r in cancelled],
        )

    async def ready_count(self, now_ms: int) -> int:
        return int(await self.redis.zcount(self.keys.ready, "-inf", now_ms))
