"""The engine's side of alerts (docs/alerts.md): the rule the scripts that raise them are given,
the sweep of the watch set, and leased, fenced delivery of due notifications.

Alerts are raised inside the scripts that change what they are about (dispatch_complete.lua,
fire_commit.lua, alert_sweep.lua, with the prelude's raise_alert), never from Python, so that a
notification exists exactly when its cause was recorded, once per incident and channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from schedcore import pb
from schedcore.store.keys import Keys, task_of_execution
from schedcore.store.scripts import Scripts
from schedcore.timeutil import duration_to_ms

# The outcome of one delivery attempt, as notify_done.lua takes it.
DELIVERED, RETRY, GIVE_UP = "ok", "retry", "fail"


def rule_arg(policy: pb.AlertPolicy, namespace: str) -> str:
    """A task's alert rule as the scripts take it (the prelude's alert_rule): "" when it sends
    nothing (no channel, or no rule)."""
    failures = policy.consecutive_failures
    late, running = duration_to_ms(policy.late_start), duration_to_ms(policy.running_longer_than)
    if not policy.channel_ids or not (failures or policy.skipped or late or running):
        return ""
    flags = ("r" if policy.recovery else "") + ("s" if policy.skipped else "")
    return "|".join(
        (
            str(failures) if failures else "",
            flags,
            namespace,
            ",".join(policy.channel_ids),
            str(late) if late else "",
            str(running) if running else "",
        )
    )


def alert_args(keys: Keys) -> list[str]:
    """What raise_alert needs: the notification prefix, the due set, the task list prefix."""
    return [keys.notification_prefix, keys.notifications_due, keys.task_notifications_prefix]


def raised_keys(keys: Keys, rule: str, kinds: Sequence[str], execution_ids: Sequence[str]) -> list[str]:
    """The keys raise_alert may write for alerts `kinds` ("failing", ...) about these executions
    under `rule`: declared in a script's KEYS under Redis Cluster, like the other keys a script
    builds (schedcore/store/engine.py, declare_items)."""
    if not rule:
        return []
    channels = rule.split("|")[3].split(",")
    out = [keys.notifications_due]
    for eid in execution_ids:
        out.append(keys.task_notifications(task_of_execution(eid)))
        out += [keys.notification(f"{kind}.{eid}.{c}") for kind in kinds for c in channels]
    return out


@dataclass(frozen=True)
class Leased:
    """A notification leased for one delivery attempt."""

    id: str
    token: int
    attempt: int
    kind: int  # AlertKind
    task_id: str
    execution_id: str
    channel_id: str
    namespace: str
    message: str
    raised_ms: int


@dataclass(frozen=True)
class Outcome:
    id: str
    token: int
    result: str  # DELIVERED, RETRY or GIVE_UP
    error: str = ""
    retry_in_ms: int = 0


async def due_partitions(
    redis: Redis, stores: Sequence[AlertStore], partitions: Sequence[int], sweep: bool
) -> tuple[list[int], list[int]]:
    """Of `partitions`, those with a notification due now, and (when `sweep`) those with a due
    watch entry: one pipelined round trip whatever the count, so an idle deployment with many
    partitions costs one call a round, not two scripts per partition."""
    seconds, micros = await redis.time()
    now = int(seconds) * 1000 + int(micros) // 1000
    async with redis.pipeline(transaction=False) as pipe:
        for p in partitions:
            pipe.zrangebyscore(stores[p].keys.notifications_due, "-inf", now, start=0, num=1)
            if sweep:
                pipe.zrangebyscore(stores[p].keys.alert_watch, "-inf", now, start=0, num=1)
        found = await pipe.execute()
    step = 2 if sweep else 1
    notify = [p for i, p in enumerate(partitions) if found[i * step]]
    watch = [p for i, p in enumerate(partitions) if sweep and found[i * step + 1]]
    return notify, watch


class AlertStore:
    """One partition's watch set and due notifications."""

    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts

    async def sweep(self, limit: int) -> tuple[int, int]:
        """Look at up to `limit` due watch entries (alert_sweep.lua): (looked at, raised)."""
        k = self.keys
        looked, raised = await self.scripts.alert_sweep(
            keys=[k.alert_watch], args=[limit, k.execution_prefix, *alert_args(k)]
        )
        return int(looked), int(raised)

    async def lease(self, limit: int, lease_ms: int) -> list[Leased]:
        """Up to `limit` due notifications, each under a new lease of `lease_ms`."""
        k = self.keys
        rows = await self.scripts.notify_lease(
            keys=[k.notifications_due], args=[limit, lease_ms, k.notification_prefix]
        )
        return [
            Leased(
                nid.decode(),
                int(token),
                int(attempt),
                int(kind),
                task.decode(),
                execution.decode(),
                channel.decode(),
                ns.decode(),
                message.decode(),
                int(raised),
            )
            for nid, token, attempt, kind, task, execution, channel, ns, message, raised in rows
        ]

    async def done(self, outcomes: Sequence[Outcome], retention_s: int, max_attempts: int) -> int:
        """Record delivery outcomes whose lease still holds (notify_done.lua): how many."""
        if not outcomes:
            return 0
        args: list[str | int] = [self.keys.notification_prefix, retention_s, max_attempts]
        for o in outcomes:
            args += [o.id, o.token, o.result, o.error, o.retry_in_ms]
        return int(await self.scripts.notify_done(keys=[self.keys.notifications_due], args=args))

    async def next_due_ms(self) -> int | None:
        """When the earliest due notification (or lease expiry) is, if any."""
        first = await self.redis.zrange(self.keys.notifications_due, 0, 0, withscores=True)
        return int(first[0][1]) if first else None
