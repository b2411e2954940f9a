"""Changing PARTITIONS offline: move every task to the partition its id names under the new count
(docs/partitions.md, "Changing P (offline)", states the invariant this keeps).

A task moves in two scripts, each inside one partition: migrate_in (the new partition: restore
its keys, add its index members, count it) and migrate_out (the old one: delete and uncount).
Each is idempotent, so a run killed anywhere is finished by running it again. With fewer
partitions, a dropped partition's counters and audit stream are added into the partition that
takes its place, once (a marker per migration run)."""

from __future__ import annotations

import heapq
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis

from schedcore.redisconn import StoreClient
from schedcore.store.keys import (
    EXECUTION_ID,
    Keys,
    Partitions,
    history_member,
    task_of_execution,
)
from schedcore.store.migrate_alerts import move_alerts
from schedcore.store.scripts import Scripts

# Members read per ZRANGE and entries per XRANGE: bounded replies on a big partition.
_CHUNK = 1000
# A pass that still finds tasks out of place after this many means something keeps writing.
_MAX_PASSES = 3


class MigrationError(Exception):
    """The migration cannot start or finish; the message says why and what to do."""


@dataclass
class Report:
    """What a run did (or, dry, would do)."""

    source: int
    target: int
    tasks: int = 0
    executions: int = 0
    request_ids: int = 0
    notifications: int = 0
    merged: list[str] = field(default_factory=list)


def parse_record(raw: bytes | str | int) -> tuple[int, int | None, str]:
    """(count, target, run) of a `partition_count` value: "P" when laid out in P partitions,
    "P>P2:run" while migration `run` moves them to P2 (target None when not migrating)."""
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    if ">" not in text:
        return int(text), None, ""
    source, rest = text.split(">", 1)
    target, run = rest.split(":", 1)
    return int(source), int(target), run


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _score(value: float | None) -> str:
    return "" if value is None else repr(value)


class Migration:
    """Moves a deployment's data from the count recorded in Redis to `target` partitions."""

    def __init__(
        self, client: StoreClient, prefix: str, target: int, say: Callable[[str], None] = lambda text: None
    ) -> None:
        Partitions(prefix, target)  # refuses a count out of range
        redis = cast(Redis, client)  # the commands below exist on both clients (schedcore/store)
        self.redis = redis
        self.prefix = prefix
        self.target = target
        self.say = say
        self.scripts = Scripts(redis)
        self.home = Keys(prefix, "0")

    async def run(self, dry_run: bool = False) -> Report:
        source, run = await self._start(dry_run)
        report = Report(source, self.target)
        if source == self.target:
            self.say(f"already laid out in {source} partition(s): nothing to move")
            return report
        span = Partitions(self.prefix, max(source, self.target))
        new = Partitions(self.prefix, self.target)
        for attempt in range(1, _MAX_PASSES + 1):
            moved = await self._pass(span, new, report, dry_run)
            if dry_run or not moved:
                break
            if attempt == _MAX_PASSES:
                raise MigrationError(
                    f"pass {attempt} still found {moved} task(s) out of place: is an api or a "
                    "scheduler still running? Stop every service and run the command again"
                )
        report.request_ids = await self._move_request_ids(span, new, dry_run)
        report.notifications = await move_alerts(self.redis, span, new, dry_run, self.say)
        if self.target < source:
            for p in range(self.target, source):
                report.merged += await self._merge_dropped(
                    span.all[p], p, span.all[p % self.target], run, dry_run
                )
            if not dry_run:
                await self._check_dropped(range(self.target, source))
        if not dry_run:
            await self.redis.set(self.home.partition_count, self.target)
            self.say(f"done: laid out in {self.target} partition(s)")
        return report

    async def _start(self, dry_run: bool) -> tuple[int, str]:
        """The count the data is in and this run's id; records "P>P2:run" (resuming a run to the
        same target), after checking that no scheduler is running."""
        raw = await self.redis.get(self.home.partition_count)
        if raw is None:
            home = self.home
            held = await self.redis.exists(home.by_name, home.history, home.ready, home.inflight)
            source, target, run = (1 if held else self.target), None, ""
        else:
            source, target, run = parse_record(raw)
        if target is not None and target != self.target:
            raise MigrationError(
                f"a migration from {source} to {target} partitions was interrupted: finish it first "
                f"(schedctl partitions migrate --to {target})"
            )
        await self._check_offline(max(source, self.target))
        if target is None:
            run = secrets.token_hex(4)
        if not dry_run and source != self.target:
            await self.redis.set(self.home.partition_count, f"{source}>{self.target}:{run}")
            self.say(f"moving from {source} to {self.target} partitions (run {run})")
        elif raw is None and not dry_run:
            await self.redis.set(self.home.partition_count, self.target)
        return source, run

    async def _check_offline(self, count: int) -> None:
        seconds, micros = await self.redis.time()
        now = int(seconds) * 1000 + int(micros) // 1000
        live = await self.redis.zrangebyscore(self.home.schedulers, now, "+inf")
        owned = [
            p
            for p, keys in enumerate(Partitions(self.prefix, count).all)
            if await self.redis.exists(keys.owner)
        ]
        if live or owned:
            names = ", ".join(_text(m) for m in live) or f"owners of partitions {owned}"
            raise MigrationError(
                f"schedulers are running ({names}): stop every service (api, scheduler) first"
            )

    async def _pass(self, span: Partitions, new: Partitions, report: Report, dry_run: bool) -> int:
        """Move every task not in its new partition; returns how many were out of place."""
        out_of_place = 0
        for p, keys in enumerate(span.all):
            found = await self._tasks_in(keys)
            movers = {t: e for t, e in found.items() if new.of_task(t) != p}
            out_of_place += len(movers)
            for done, (task_id, executions) in enumerate(sorted(movers.items()), 1):
                if not dry_run:
                    executions = await self._move(task_id, executions, keys, span.all[new.of_task(task_id)])
                report.tasks += 1
                report.executions += len(executions)
                if done % _CHUNK == 0:
                    self.say(f"partition {p}: {done:,} of {len(movers):,} tasks moved")
            if movers:
                verb = "to move" if dry_run else "moved"
                self.say(f"partition {p}: {len(movers):,} of {len(found):,} tasks {verb}")
        return out_of_place

    async def _tasks_in(self, keys: Keys) -> dict[str, set[str]]:
        """Every task with keys in this partition -> the execution ids the partition's shared
        indexes list for it (its own history index is read when it moves)."""
        found: dict[str, set[str]] = {}
        async for member in self._members(keys.by_name):
            found.setdefault(member.rsplit("\x00", 1)[1], set())
        async for member in self._members(keys.history):
            execution = member.split(":", 1)[1]
            found.setdefault(task_of_execution(execution), set()).add(execution)
        for index in (keys.ready, keys.ready_command, keys.inflight):
            async for execution in self._members(index):
                found.setdefault(task_of_execution(execution), set()).add(execution)
        return found

    async def _members(self, key: str) -> AsyncIterator[str]:
        start = 0
        while True:
            chunk = await self.redis.zrange(key, start, start + _CHUNK - 1)
            for member in chunk:
                yield _text(member)
            if len(chunk) < _CHUNK:
                return
            start += _CHUNK

    async def _move(self, task_id: str, known: set[str], old: Keys, new: Keys) -> set[str]:
        """One task: migrate_in on `new`, then migrate_out on `old`. Returns its executions."""
        task, history = old.task(task_id), old.task_history(task_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in (task, history):
                pipe.dump(key)
                pipe.pttl(key)
            pipe.zrange(history, 0, -1)
            task_dump, task_ttl, history_dump, history_ttl, listed = await pipe.execute()
        executions = sorted(known | {_text(e) for e in listed})
        members = {e: history_member(e) if EXECUTION_ID.match(e) else "" for e in executions}
        rows: list[Any] = []
        if executions:
            async with self.redis.pipeline(transaction=False) as pipe:
                for e in executions:
                    pipe.dump(old.execution(e))
                    pipe.pttl(old.execution(e))
                    pipe.zscore(old.history, members[e] or "-")
                    for index in (old.ready, old.ready_command, old.inflight):
                        pipe.zscore(index, e)
                rows = await pipe.execute()
        args: list[Any] = [
            new.execution_prefix,
            task_dump or "",
            task_ttl,
            history_dump or "",
            history_ttl,
        ]
        for i, e in enumerate(executions):
            dump, ttl, in_history, ready, command, inflight = rows[i * 6 : i * 6 + 6]
            args += [e, dump or "", ttl, members[e] if in_history is not None else ""]
            args += [_score(ready), _score(command), _score(inflight)]
        await self.scripts.migrate_in(keys=self._task_keys(new, task_id), args=args)
        out: list[Any] = [old.execution_prefix]
        for e in executions:
            out += [e, members[e]]
        await self.scripts.migrate_out(keys=self._task_keys(old, task_id), args=out)
        return set(executions)

    @staticmethod
    def _task_keys(keys: Keys, task_id: str) -> list[str]:
        """migrate_in's and migrate_out's KEYS, in `keys`' partition."""
        return [
            keys.task(task_id),
            keys.task_history(task_id),
            keys.by_name,
            keys.by_next,
            keys.history,
            keys.ready,
            keys.ready_command,
            keys.inflight,
            keys.task_counts,
            keys.quota_tasks,
            keys.quota_bytes,
            keys.task_active(task_id),
        ]

    async def _move_request_ids(self, span: Partitions, new: Partitions, dry_run: bool) -> int:
        """Request-id keys to the partition their digest names under the new count."""
        moved = 0
        for p, keys in enumerate(span.all):
            async for raw in self.redis.scan_iter(match=keys.request_prefix + "*", count=_CHUNK):
                key = _text(raw)
                digest = key[len(keys.request_prefix) :]
                target = int(digest, 16) % new.count
                if target == p:
                    continue
                moved += 1
                if dry_run:
                    continue
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.dump(key)
                    pipe.pttl(key)
                    dump, ttl = await pipe.execute()
                if dump is not None:
                    await self.redis.restore(
                        span.all[target].request_prefix + digest, max(ttl, 0), dump, replace=True
                    )
                await self.redis.delete(key)
        if moved:
            self.say(f"request ids: {moved:,} {'to move' if dry_run else 'moved'}")
        return moved

    async def _merge_dropped(self, old: Keys, p: int, into: Keys, run: str, dry_run: bool) -> list[str]:
        """Add partition p's counters and audit stream into `into`'s, once; returns what it merged."""
        counters = [old.task_counts, old.quota_tasks, old.quota_bytes]
        for pattern in (old.minute_stats(0).removesuffix("0"), old.quota_runs(0).removesuffix("0")):
            counters += [_text(k) async for k in self.redis.scan_iter(match=pattern + "*", count=_CHUNK)]
        merged: list[str] = []
        for key in counters:
            values = await self.redis.hgetall(key)
            if not values:
                continue
            what = key[len(old.base) :]
            merged.append(f"{p}:{what}")
            if dry_run:
                continue
            target = into.base + what
            ttl = await self.redis.pttl(key)
            pairs = [x for item in values.items() for x in item]
            await self.scripts.migrate_merge(keys=[target, into.migrated(run, what, p)], args=[ttl, *pairs])
            await self.redis.delete(key)
        if await self.redis.exists(old.audit):
            merged.append(f"{p}:audit")
            if not dry_run:
                await self._merge_audit(old, p, into, run)
        if not dry_run:
            await self.redis.delete(old.owner)
            if merged:
                what = ", ".join(m.split(":", 1)[1] for m in merged)
                self.say(f"partition {p}: {what} added to partition {into.partition}")
        return merged

    async def _merge_audit(self, old: Keys, p: int, into: Keys, run: str) -> None:
        marker = into.migrated(run, "audit", p)
        if not await self.redis.exists(marker):
            await self.redis.delete(into.audit_merging)
            streams = [await self._entries(into.audit, 0), await self._entries(old.audit, 1)]
            batch: list[tuple[int, dict[bytes, bytes]]] = []
            for ms, _, _, fields in heapq.merge(*streams):
                batch.append((ms, fields))
                if len(batch) == _CHUNK:
                    await self._append(into.audit_merging, batch)
                    batch = []
            await self._append(into.audit_merging, batch)
            await self.scripts.migrate_audit(keys=[into.audit, into.audit_merging, marker])
        await self.redis.delete(old.audit)

    async def _entries(self, stream: str, origin: int) -> list[tuple[int, int, int, dict[bytes, bytes]]]:
        """Every entry of `stream` as (ms, seq, origin, fields), oldest first."""
        out: list[tuple[int, int, int, dict[bytes, bytes]]] = []
        low = "-"
        while True:
            chunk: list[Any] = await self.redis.xrange(stream, low, "+", count=_CHUNK) or []
            for entry_id, fields in chunk:
                ms, seq = _text(entry_id).split("-")
                out.append((int(ms), int(seq), origin, fields))
            if len(chunk) < _CHUNK:
                return out
            low = "(" + _text(chunk[-1][0])

    async def _append(self, stream: str, batch: list[tuple[int, dict[bytes, bytes]]]) -> None:
        """Entries in time order; `<ms>-*` numbers entries sharing a millisecond."""
        if not batch:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for ms, fields in batch:
                pipe.xadd(stream, fields, id=f"{ms}-*")  # type: ignore[arg-type]
            await pipe.execute()

    async def _check_dropped(self, dropped: range) -> None:
        """No key of a dropped partition is left (except this run's own bookkeeping)."""
        for p in dropped:
            left = [
                _text(k) async for k in self.redis.scan_iter(match=f"{self.prefix}:{{{p}}}:*", count=_CHUNK)
            ]
            if left:
                shown = ", ".join(sorted(left)[:5])
                raise MigrationError(
                    f"partition {p} still holds {len(left)} key(s) ({shown}): not recorded as done; "
                    "look at them and run the command again"
                )
