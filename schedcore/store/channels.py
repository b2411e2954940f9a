"""Notification channels in Redis (docs/alerts.md): global, in partition 0. One hash per channel
(`pb`: the Channel protobuf with its secrets sealed, `rev`: the etag, `ns`, `name`) and one
index by namespace and name, which also keeps names unique per namespace. Every write is one Lua
script with its audit event: a channel and its index entry never disagree.

What is read back is the channel as stored: secrets sealed (schedcore/sealing.py: the api
redacts them with `redact_channel`, the one that sends opens them with `unseal_channel`), its
`etag` set from `rev`.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from schedcore import pb
from schedcore.errors import Aborted, AlreadyExists, IdTaken, NotFound, quote
from schedcore.store.audit import NO_AUDIT_ARGS, AuditEntry
from schedcore.store.keys import Keys
from schedcore.store.scripts import Scripts

_FIELDS = ("pb", "rev")


def decode(values: Sequence[bytes | None]) -> pb.Channel | None:
    raw, rev = values
    if raw is None or rev is None:
        return None
    channel = pb.Channel.FromString(raw)
    channel.etag = rev.decode()
    return channel


def member_channel_id(member: str) -> str:
    """The channel id at the end of an index member."""
    return member.rsplit("\x00", 1)[1]


class ChannelStore:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts

    async def create(self, channel: pb.Channel, audit: AuditEntry | None = None) -> None:
        """Store a new channel (with its id, namespace and name; secrets sealed). IdTaken when the
        id is in use (pick another), AlreadyExists when its namespace has a channel of that name."""
        k = self.keys
        result = await self.scripts.channel_create(
            keys=[k.channel(channel.id), k.channels, k.audit],
            args=[
                channel.id,
                _stored(channel).SerializeToString(),
                channel.namespace,
                channel.name,
                *(audit.args() if audit is not None else NO_AUDIT_ARGS),
            ],
        )
        if result[0] == b"collision":
            raise IdTaken(channel.id)
        _check_name(channel, result)

    async def get(self, channel_id: str) -> pb.Channel:
        """The channel as stored (secrets sealed, etag set); NotFound."""
        found = (await self.get_many([channel_id]))[0]
        if found is None:
            raise NotFound(f"channel {channel_id!r} not found")
        return found

    async def get_many(self, channel_ids: Sequence[str]) -> list[pb.Channel | None]:
        """Each channel as stored, None where there is none; one round trip."""
        if not channel_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for channel_id in channel_ids:
                pipe.hmget(self.keys.channel(channel_id), _FIELDS)
            rows = await pipe.execute()
        return [decode(row) for row in rows]

    async def update(
        self, channel: pb.Channel, expected_rev: int | None, audit: AuditEntry | None = None
    ) -> int:
        """Compare-and-set: replace the channel (its namespace stays) if its rev is still
        `expected_rev`. Returns the new rev; NotFound, Aborted when the rev moved on,
        AlreadyExists when the new name is taken in its namespace."""
        k = self.keys
        result = await self.scripts.channel_update(
            keys=[k.channel(channel.id), k.channels, k.audit],
            args=[
                channel.id,
                "" if expected_rev is None else str(expected_rev),
                _stored(channel).SerializeToString(),
                channel.name,
                *(audit.args() if audit is not None else NO_AUDIT_ARGS),
            ],
        )
        _check(channel.id, result)
        _check_name(channel, result)
        return int(result[1])

    async def delete(
        self, channel_id: str, expected_rev: int | None, audit: AuditEntry | None = None
    ) -> None:
        """NotFound, or Aborted when `expected_rev` is given and the rev moved on."""
        k = self.keys
        result = await self.scripts.channel_delete(
            keys=[k.channel(channel_id), k.channels, k.audit],
            args=[
                channel_id,
                "" if expected_rev is None else str(expected_rev),
                *(audit.args() if audit is not None else NO_AUDIT_ARGS),
            ],
        )
        _check(channel_id, result)

    async def scan(self, namespace: str, after: str | None, count: int) -> list[str]:
        """Up to `count` index members strictly after `after` (None: from the start), of one
        namespace ("": every namespace), in order of namespace and name."""
        # A namespace's members are those from "<ns>\x00" up to (not including) "<ns>\x01".
        low = b"[" + namespace.encode() + b"\x00" if namespace else b"-"
        high = b"(" + namespace.encode() + b"\x01" if namespace else b"+"
        if after is not None:
            low = b"(" + after.encode()
        members: list[bytes] = await self.redis.zrangebylex(self.keys.channels, low, high, start=0, num=count)  # type: ignore[assignment]
        return [m.decode() for m in members]


def _stored(channel: pb.Channel) -> pb.Channel:
    """What the hash keeps: the etag is its `rev`."""
    out = pb.Channel()
    out.CopyFrom(channel)
    out.ClearField("etag")
    return out


def _check(channel_id: str, result: list[bytes]) -> None:
    if result[0] == b"missing":
        raise NotFound(f"channel {channel_id!r} not found")
    if result[0] == b"conflict":
        raise Aborted(f"channel {channel_id!r} was changed concurrently (etag is now {int(result[1])})")


def _check_name(channel: pb.Channel, result: list[bytes]) -> None:
    if result[0] == b"name":
        raise AlreadyExists(
            f"channel.name: namespace {channel.namespace!r} has a channel named {quote(channel.name)} "
            f"already ({bytes(result[1]).decode()})"
        )
