"""API tokens in Redis (docs/security.md): one hash per token, a key from the SHA-256 of its
secret to its id, and an index for listing. The secret itself is never stored.

A token is `tsk_` + 43 URL-safe characters (256 random bits), so one SHA-256 is enough: there is
nothing to guess that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from schedcore import pb
from schedcore.errors import IdTaken, NotFound
from schedcore.store.audit import NO_AUDIT_ARGS, AuditEntry
from schedcore.store.keys import Keys, pad_ms
from schedcore.store.scripts import Scripts
from schedcore.timeutil import ms_to_ts

SECRET_PREFIX = "tsk_"
_FIELDS = ("name", "role", "ns", "hash", "ctime", "exp", "rtime", "by", "cmd")


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What is stored of a secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def index_member(create_ms: int, token_id: str) -> str:
    """Member of the token index: ordered by creation time, then id."""
    return f"{pad_ms(create_ms)}:{token_id}"


@dataclass(frozen=True)
class StoredToken:
    id: str
    name: str
    role: int
    namespace: str
    digest: str
    create_ms: int
    expire_ms: int | None
    revoke_ms: int | None
    created_by: str
    # May create command targets (docs/security.md); tokens stored before the flag existed may not.
    allow_command_targets: bool = False

    def usable(self, now_ms: int) -> bool:
        return self.revoke_ms is None and (self.expire_ms is None or now_ms < self.expire_ms)

    def to_proto(self) -> pb.Token:
        token = pb.Token(
            id=self.id,
            name=self.name,
            role=self.role,  # type: ignore[arg-type]
            namespace=self.namespace,
            created_by=self.created_by,
            allow_command_targets=self.allow_command_targets,
        )
        token.create_time.CopyFrom(ms_to_ts(self.create_ms))
        if self.expire_ms is not None:
            token.expire_time.CopyFrom(ms_to_ts(self.expire_ms))
        if self.revoke_ms is not None:
            token.revoke_time.CopyFrom(ms_to_ts(self.revoke_ms))
        return token

    @classmethod
    def decode(cls, token_id: str, values: Sequence[bytes | None]) -> StoredToken | None:
        name, role, ns, hashed, ctime, exp, rtime, by, cmd = values
        if name is None or role is None or hashed is None or ctime is None:
            return None
        return cls(
            id=token_id,
            name=name.decode(),
            role=int(role),
            namespace=(ns or b"").decode(),
            digest=hashed.decode(),
            create_ms=int(ctime),
            expire_ms=int(exp) if exp is not None else None,
            revoke_ms=int(rtime) if rtime is not None else None,
            created_by=(by or b"").decode(),
            allow_command_targets=cmd == b"1",
        )


class TokenStore:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = scripts

    async def create(self, token: StoredToken, audit: AuditEntry | None = None) -> str | None:
        """Store a token. None when created; the id of the token that already has this secret
        otherwise (nothing is written). IdTaken when the id is taken (pick another)."""
        k = self.keys
        result = await self.scripts.token_create(
            keys=[k.token(token.id), k.token_hash(token.digest), k.tokens, k.audit],
            args=[
                token.id,
                token.name,
                token.role,
                token.namespace,
                token.digest,
                token.create_ms,
                "" if token.expire_ms is None else token.expire_ms,
                token.created_by,
                index_member(token.create_ms, token.id),
                "1" if token.allow_command_targets else "",
                *(audit.args() if audit is not None else NO_AUDIT_ARGS),
            ],
        )
        if result[0] == b"exists":
            return bytes(result[1]).decode()
        if result[0] == b"collision":
            raise IdTaken(token.id)
        return None

    async def lookup(self, secret_digest: str) -> StoredToken | None:
        """The token whose secret has this digest, revoked and expired ones included."""
        token_id: bytes | None = await self.redis.get(self.keys.token_hash(secret_digest))  # type: ignore[assignment]
        if token_id is None:
            return None
        found = await self.get_many([token_id.decode()])
        token = found[0]
        # The key already matched on the digest; compare the record's own copy in constant time.
        if token is None or not hmac.compare_digest(token.digest, secret_digest):
            return None
        return token

    async def get(self, token_id: str) -> StoredToken:
        found = (await self.get_many([token_id]))[0]
        if found is None:
            raise NotFound(f"token {token_id!r} not found")
        return found

    async def get_many(self, token_ids: Sequence[str]) -> list[StoredToken | None]:
        if not token_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for token_id in token_ids:
                pipe.hmget(self.keys.token(token_id), _FIELDS)
            rows = await pipe.execute()
        return [StoredToken.decode(i, row) for i, row in zip(token_ids, rows, strict=True)]

    async def revoke(self, token_id: str, now_ms: int, audit: AuditEntry | None = None) -> bool:
        """Revoke a token. True when revoked now, False when it already was; NotFound."""
        k = self.keys
        result = await self.scripts.token_revoke(
            keys=[k.token(token_id), k.audit],
            args=[now_ms, *(audit.args() if audit is not None else NO_AUDIT_ARGS)],
        )
        if result[0] == b"missing":
            raise NotFound(f"token {token_id!r} not found")
        return bool(result[0] == b"ok")

    async def scan(self, before: str | None, count: int) -> list[str]:
        """Up to `count` index members, newest first, strictly older than `before`."""
        high = b"+" if before is None else b"(" + before.encode()
        members: list[bytes] = await self.redis.zrevrangebylex(
            self.keys.tokens, high, b"-", start=0, num=count
        )  # type: ignore[assignment]
        return [m.decode() for m in members]
