"""Changing PARTITIONS offline, for the alert keys (docs/alerts.md, "Keys"): every notification,
its place in the due set, its task's notification list and the watch entries of its task's runs
go to the partition of their task under the new count (schedcore/store/migrate.py moves the
tasks; this runs after it, with every service stopped).

Each key is restored in its new partition before it is deleted from the old one (a set member
added before it is removed), so a run killed anywhere loses nothing and a rerun finishes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from schedcore.store.keys import Keys, Partitions, task_of_execution

_CHUNK = 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _task_of_notification(notification_id: str) -> str:
    """`<kind>.<execution id>.<channel id>` -> the task id (the execution id's first 16)."""
    return task_of_execution(notification_id.split(".", 2)[1])


def _task_of_watch(member: str) -> str:
    """`<l|r>:<limit ms>:<execution id>:...` -> the task id."""
    return task_of_execution(member.split(":", 3)[2])


async def _copy(redis: Redis, key: str, to: str) -> None:
    """`key` restored as `to` (its TTL kept), then deleted."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.dump(key)
        pipe.pttl(key)
        dump, ttl = await pipe.execute()
    if dump is not None:
        await redis.restore(to, max(ttl, 0), dump, replace=True)
    await redis.delete(key)


async def _scan(redis: Redis, pattern: str) -> list[str]:
    return [_text(k) async for k in redis.scan_iter(match=pattern + "*", count=_CHUNK)]


async def move_alerts(
    redis: Redis, span: Partitions, new: Partitions, dry_run: bool, say: Callable[[str], None]
) -> int:
    """Move the alert keys of `span`'s partitions whose task lives elsewhere under `new`;
    returns how many notifications moved (or, dry, would)."""
    moved = 0
    for p, old in enumerate(span.all):
        moved += await _notifications(redis, old, p, span, new, dry_run)
        if not dry_run:
            await _task_lists(redis, old, p, span, new)
            await _sorted_members(
                redis, old.alert_watch, _task_of_watch, p, span, new, lambda k: k.alert_watch
            )
    if moved:
        say(f"notifications: {moved:,} {'to move' if dry_run else 'moved'}")
    return moved


async def _notifications(
    redis: Redis, old: Keys, p: int, span: Partitions, new: Partitions, dry_run: bool
) -> int:
    moved = 0
    for key in await _scan(redis, old.notification_prefix):
        nid = key[len(old.notification_prefix) :]
        target = new.of_task(_task_of_notification(nid))
        if target == p:
            continue
        moved += 1
        if dry_run:
            continue
        to = span.all[target]
        due = await redis.zscore(old.notifications_due, nid)
        await _copy(redis, key, to.notification(nid))
        if due is not None:
            await redis.zadd(to.notifications_due, {nid: due})
            await redis.zrem(old.notifications_due, nid)
    if not dry_run:  # due entries whose hash had already moved (a rerun) or expired
        await _sorted_members(
            redis, old.notifications_due, _task_of_notification, p, span, new, lambda k: k.notifications_due
        )
    return moved


async def _task_lists(redis: Redis, old: Keys, p: int, span: Partitions, new: Partitions) -> None:
    for key in await _scan(redis, old.task_notifications_prefix):
        task_id = key[len(old.task_notifications_prefix) :]
        target = new.of_task(task_id)
        if target != p:
            await _copy(redis, key, span.all[target].task_notifications(task_id))


async def _sorted_members(
    redis: Redis,
    key: str,
    task_of: Callable[[str], str],
    p: int,
    span: Partitions,
    new: Partitions,
    key_in: Callable[[Keys], str],
) -> None:
    """Members of the sorted set `key` whose task lives elsewhere: added there, then removed."""
    start = 0
    while True:
        chunk: list[tuple[bytes, float]] = await redis.zrange(key, start, start + _CHUNK - 1, withscores=True)  # type: ignore[assignment]
        staying = 0
        for raw, score in chunk:
            member = _text(raw)
            target = new.of_task(task_of(member))
            if target == p:
                staying += 1
                continue
            await redis.zadd(key_in(span.all[target]), {member: score})
            await redis.zrem(key, member)
        if len(chunk) < _CHUNK:
            return
        start += staying
