"""AuthService: API tokens (docs/security.md). Creating, listing and revoking need the admin role
(services/api/access.py checks it); an admin limited to a namespace manages only tokens of that
namespace and cannot create cluster-wide ones. WhoAmI describes the caller's token."""

from __future__ import annotations

import re

import grpc

from schedcore import pb
from schedcore.errors import InvalidArgument, PermissionDenied, Violations
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.audit import AuditEntry
from schedcore.store.keys import TOKEN_ID
from schedcore.store.tokens import StoredToken, digest, new_secret
from schedcore.timeutil import duration_to_ms
from services.api import access, validation
from services.api.access import Authenticator
from services.api.ids import new_id, with_fresh_id
from services.api.pagetoken import PageTokens
from services.api.paging import page

MAX_TOKEN_NAME = 200
MAX_TTL_MS = 10 * 365 * 24 * 3600 * 1000
BOOTSTRAP_NAME = "bootstrap"
_INDEX_MEMBER = re.compile(r"^[0-9]{13}:[0-9a-f]{16}$")
ACTION = pb.AuditAction


def token_id(value: str, path: str = "id") -> str:
    if not value:
        raise InvalidArgument.field(path, "required")
    if not TOKEN_ID.match(value):
        raise InvalidArgument.field(path, "malformed token id (expected 16 lowercase hex characters)")
    return value


class AuthService(pb.auth_service_grpc.AuthServiceServicer):  # type: ignore[misc]  # grpc is untyped
    def __init__(
        self, store: Store, settings: Settings, pages: PageTokens, authenticator: Authenticator
    ) -> None:
        self.store = store
        self.settings = settings
        self.pages = pages
        self.authenticator = authenticator

    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTokenResponse:
        caller = access.current()
        v = Violations()
        name = validation.display_name(v, "token.name", request.token.name, MAX_TOKEN_NAME)
        role = request.token.role
        if role == pb.Role.ROLE_UNSPECIFIED:
            v.add("token.role", "required: viewer, editor or admin")
        elif role not in pb.Role.values():
            v.add("token.role", f"unknown role {role}")
        namespace = request.token.namespace
        try:
            validation.namespace(namespace, "token.namespace")
        except InvalidArgument as exc:
            v.items += exc.violations
        ttl_ms = None
        if request.HasField("ttl"):
            ttl_ms = duration_to_ms(request.ttl)
            if request.ttl.seconds < 0 or request.ttl.nanos < 0 or not 1000 <= ttl_ms <= MAX_TTL_MS:
                v.add("ttl", "must be between 1s and 10 years (3650 days)")
        v.raise_if_any()
        if caller.namespace and not namespace:
            raise PermissionDenied(
                f"this token is limited to namespace {caller.namespace!r}: it cannot create a token "
                f"for every namespace (set token.namespace)"
            )
        access.check_namespace(namespace, "the new token")
        now = await self.store.now_ms()
        secret = new_secret()

        async def attempt() -> StoredToken:
            token = StoredToken(
                id=new_id(),
                name=name,
                role=role,
                namespace=namespace,
                digest=digest(secret),
                create_ms=now,
                expire_ms=now + ttl_ms if ttl_ms is not None else None,
                revoke_ms=None,
                created_by=caller.name,
                allow_command_targets=request.token.allow_command_targets,
            )
            audit = AuditEntry.of(
                self.settings.audit_max_events,
                ACTION.AUDIT_ACTION_CREATE_TOKEN,
                caller.actor(),
                namespace=namespace,
                token_id=token.id,
            )
            await self.store.tokens.create(token, audit)
            return token

        token = await with_fresh_id("a token id", attempt)
        return pb.CreateTokenResponse(token=token.to_proto(), secret=secret)

    async def ListTokens(
        self, request: pb.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTokensResponse:
        size = validation.page_size(request.page_size)
        namespace = access.current().namespace
        now_ms = await self.store.now_ms()

        async def fetch(after: str | None, count: int) -> list[tuple[str, StoredToken | None]]:
            members = await self.store.tokens.scan(after, count)
            found = await self.store.tokens.get_many([m.split(":", 1)[1] for m in members])
            return list(zip(members, found, strict=True))

        def matches(token: StoredToken) -> bool:
            if namespace and token.namespace != namespace:
                return False
            return request.show_revoked or token.usable(now_ms)

        filters: list[object] = ["tokens", request.show_revoked, namespace]
        tokens, next_token = await page(
            self.pages,
            request.page_token,
            filters,
            fetch,
            size,
            matches,
            StoredToken.to_proto,
            self.settings.list_page_max_bytes,
            _INDEX_MEMBER.match,
        )
        return pb.ListTokensResponse(tokens=tokens, next_page_token=next_token)

    async def RevokeToken(
        self, request: pb.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeTokenResponse:
        caller = access.current()
        target = await self.store.tokens.get(token_id(request.id))
        if caller.namespace and target.namespace != caller.namespace:
            raise PermissionDenied(
                f"token {target.id} is not in namespace {caller.namespace!r}, the only one this token manages"
            )
        now = await self.store.now_ms()
        audit = AuditEntry.of(
            self.settings.audit_max_events,
            ACTION.AUDIT_ACTION_REVOKE_TOKEN,
            caller.actor(),
            namespace=target.namespace,
            token_id=target.id,
        )
        await self.store.tokens.revoke(target.id, now, audit)
        self.authenticator.forget(target.id)  # at once on this replica
        return pb.RevokeTokenResponse(token=(await self.store.tokens.get(target.id)).to_proto())

    async def WhoAmI(self, request: pb.WhoAmIRequest, context: grpc.aio.ServicerContext) -> pb.WhoAmIResponse:
        return pb.WhoAmIResponse(token=access.current().token)


async def bootstrap(store: Store, secret: str) -> None:
    """Write AUTH_BOOTSTRAP_TOKEN as the cluster-wide admin token `bootstrap`, unless a token with
    that secret exists already (another replica wrote it, or it was revoked: it stays revoked)."""
    now = await store.now_ms()

    async def attempt() -> str | None:
        token = StoredToken(
            id=new_id(),
            name=BOOTSTRAP_NAME,
            role=pb.Role.ROLE_ADMIN,
            namespace="",
            digest=digest(secret),
            create_ms=now,
            expire_ms=None,
            revoke_ms=None,
            created_by=BOOTSTRAP_NAME,
        )
        return await store.tokens.create(token)

    prior = await with_fresh_id("the bootstrap token's id", attempt)
    if prior is not None:
        existing = await store.tokens.get(prior)
        if existing.revoke_ms is not None:
            access.log.warning(
                "AUTH_BOOTSTRAP_TOKEN was revoked (token %s) and stays revoked: remove it from "
                "the environment",
                prior,
            )
