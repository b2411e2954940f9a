"""A task's notifications, read (docs/alerts.md, "Keys"). The scheduler's scripts raise and
deliver them; the api only lists them (ListNotifications), so nothing here writes.

A notification is a hash in its task's partition (Keys.notification: k kind as the AlertKind
number, t task id, e execution id, c channel id, ns, m message, at raised ms, st state p/d/f,
a attempts, err last error, end ms); `notifs:task:<task id>` holds the task's notification ids
scored by when they were raised. A listing walks it newest first, by (raised ms, id) descending:
a cursor is `cursor()` of the last one returned.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from redis.asyncio import Redis

from schedcore import pb
from schedcore.store.keys import Partitions, pad_ms
from schedcore.timeutil import ms_to_ts

_FIELDS = ("k", "t", "e", "c", "m", "at", "st", "a", "err", "end")
STATES = {
    b"p": pb.NotificationState.NOTIFICATION_STATE_PENDING,
    b"d": pb.NotificationState.NOTIFICATION_STATE_DELIVERED,
    b"f": pb.NotificationState.NOTIFICATION_STATE_FAILED,
}
# "<13-digit raised ms>:<notification id>"
CURSOR = re.compile(r"^([0-9]{13}):([0-9a-z_.\-]{1,200})$")


def cursor(raised_ms: int, notification_id: str) -> str:
    return f"{pad_ms(raised_ms)}:{notification_id}"


def decode(notification_id: str, values: Sequence[bytes | None]) -> pb.Notification | None:
    """The Notification of a hash's fields (_FIELDS), None when it is gone (expired)."""
    kind, task, execution, channel, message, at, state, attempts, error, end = values
    if kind is None or at is None:
        return None
    out = pb.Notification(
        id=notification_id,
        kind=int(kind),  # type: ignore[arg-type]
        task_id=(task or b"").decode(),
        execution_id=(execution or b"").decode(),
        channel_id=(channel or b"").decode(),
        message=(message or b"").decode(errors="replace"),
        state=STATES.get(state or b"", pb.NotificationState.NOTIFICATION_STATE_UNSPECIFIED),
        attempts=int(attempts or 0),
        last_error=(error or b"").decode(errors="replace"),
    )
    out.create_time.CopyFrom(ms_to_ts(int(at)))
    if end:
        out.end_time.CopyFrom(ms_to_ts(int(end)))
    return out


class NotificationStore:
    def __init__(self, redis: Redis, partitions: Partitions) -> None:
        self.redis = redis
        self.partitions = partitions

    async def scan(self, task_id: str, after: str | None, count: int) -> list[tuple[str, str]]:
        """Up to `count` (cursor, notification id) of the task, newest first, strictly after the
        cursor `after` (None: from the newest). Equal raise times order by id, descending (as
        ZREVRANGE orders them), so a page ending among them resumes where it stopped."""
        key = self.partitions.task(task_id).task_notifications(task_id)
        rows: list[tuple[bytes, float]]
        if after is None:
            rows = await self.redis.zrevrangebyscore(key, "+inf", "-inf", start=0, num=count, withscores=True)  # type: ignore[assignment]
        else:
            match = CURSOR.match(after)
            assert match, after
            at, last = int(match[1]), match[2]
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrevrangebyscore(key, at, at, withscores=True)
                pipe.zrevrangebyscore(key, f"({at}", "-inf", start=0, num=count, withscores=True)
                ties, older = await pipe.execute()
            rows = [(m, s) for m, s in ties if m.decode() < last][:count] + older
        return [(cursor(int(score), m.decode()), m.decode()) for m, score in rows[:count]]

    async def get_many(self, task_id: str, notification_ids: Sequence[str]) -> list[pb.Notification | None]:
        if not notification_ids:
            return []
        keys = self.partitions.task(task_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for notification_id in notification_ids:
                pipe.hmget(keys.notification(notification_id), _FIELDS)
            rows = await pipe.execute()
        return [decode(i, row) for i, row in zip(notification_ids, rows, strict=True)]
