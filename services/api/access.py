"""Who is calling the api, and what they may do (docs/security.md).

- `Authenticator.__call__` is the shared interceptor's hook (schedcore/interceptors.py): for a
  method of a public service it reads `authorization: Bearer <token>`, verifies the token (a
  replica trusts a verified token for AUTH_CACHE_SECONDS), checks the role RULES require and binds
  the caller (a Principal) to `principal_var`. A verified token's call is also counted against
  its rate limit (services/api/ratelimit.py). Methods of other services (health, reflection) are
  open. Refusals raise Unauthenticated, PermissionDenied or ResourceExhausted (rate) before the
  request is even decoded.
- RULES is the one table of method -> required role. It must name every method of the public
  services: a method added to the protos without a rule stops the api at import.
- Namespaces are checked by the servicers, which know what a request touches:
  `check_namespace` and `list_namespace`; so is the command-target permission (an editor may
  create command targets only with Token.allow_command_targets): `check_command_targets`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from schedcore import pb
from schedcore.errors import PermissionDenied, StoreUnavailable, Unauthenticated
from schedcore.logs import request_id_var
from schedcore.settings import MAX_BEARER
from schedcore.store.audit import Actor
from schedcore.store.tokens import StoredToken, TokenStore, digest
from services.api.ratelimit import RateLimiter

log = logging.getLogger("api.access")

VIEWER = pb.Role.ROLE_VIEWER
EDITOR = pb.Role.ROLE_EDITOR
ADMIN = pb.Role.ROLE_ADMIN

PUBLIC_SERVICES = (
    pb.task_service_pb2.DESCRIPTOR.services_by_name["TaskService"],
    pb.auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"],
    pb.audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"],
    pb.alert_service_pb2.DESCRIPTOR.services_by_name["AlertService"],
)


@dataclass(frozen=True)
class Rule:
    role: int
    # The call needs a token not limited to a namespace (cluster-wide figures).
    cluster_wide: bool = False


_RULES_BY_NAME: dict[str, Rule] = {
    "TaskService.CreateTask": Rule(EDITOR),
    "TaskService.BatchCreateTasks": Rule(EDITOR),
    "TaskService.GetTask": Rule(VIEWER),
    "TaskService.ListTasks": Rule(VIEWER),
    "TaskService.UpdateTask": Rule(EDITOR),
    "TaskService.DeleteTask": Rule(EDITOR),
    "TaskService.PauseTask": Rule(EDITOR),
    "TaskService.ResumeTask": Rule(EDITOR),
    "TaskService.RunTask": Rule(EDITOR),
    "TaskService.BackfillTask": Rule(EDITOR),
    "TaskService.RerunExecution": Rule(EDITOR),
    "TaskService.CancelExecution": Rule(EDITOR),
    "TaskService.PreviewSchedule": Rule(VIEWER),
    "TaskService.ListExecutions": Rule(VIEWER),
    "TaskService.GetExecution": Rule(VIEWER),
    "TaskService.GetStats": Rule(VIEWER, cluster_wide=True),
    "AuthService.CreateToken": Rule(ADMIN),
    "AuthService.ListTokens": Rule(ADMIN),
    "AuthService.RevokeToken": Rule(ADMIN),
    "AuthService.WhoAmI": Rule(VIEWER),
    "AuditService.ListAuditEvents": Rule(VIEWER),
    "AlertService.CreateChannel": Rule(EDITOR),
    "AlertService.GetChannel": Rule(VIEWER),
    "AlertService.ListChannels": Rule(VIEWER),
    "AlertService.UpdateChannel": Rule(EDITOR),
    "AlertService.DeleteChannel": Rule(EDITOR),
    "AlertService.TestChannel": Rule(EDITOR),  # it sends: a viewer may not make the suite call out
    "AlertService.ListNotifications": Rule(VIEWER),
}


def _rules() -> dict[str, Rule]:
    """RULES keyed by gRPC's full method name ("/scheduler.v1.TaskService/CreateTask")."""
    out: dict[str, Rule] = {}
    for service in PUBLIC_SERVICES:
        for method in service.methods:
            short = f"{service.name}.{method.name}"
            if short not in _RULES_BY_NAME:
                raise RuntimeError(f"services/api/access.py: no role rule for {short}")
            if method.client_streaming or method.server_streaming:  # the interceptor checks unary calls
                raise RuntimeError(f"services/api/access.py: {short} streams; authenticate it first")
            out[f"/{service.full_name}/{method.name}"] = _RULES_BY_NAME[short]
    if len(out) != len(_RULES_BY_NAME):
        raise RuntimeError("services/api/access.py: a rule names a method the protos do not have")
    return out


RULES = _rules()


@dataclass(frozen=True)
class Principal:
    """The caller: its token's id, name, role and namespace ("" = every namespace)."""

    token_id: str
    name: str
    role: int
    namespace: str
    token: pb.Token  # as WhoAmI shows it

    @property
    def may_create_command_targets(self) -> bool:
        """Admins may; other roles only with the token's allow_command_targets."""
        return self.role >= ADMIN or self.token.allow_command_targets

    @property
    def expire_ms(self) -> int | None:
        return self.token.expire_time.ToMilliseconds() if self.token.HasField("expire_time") else None

    def actor(self) -> Actor:
        """Who the audit trail names: nobody (empty) without authentication."""
        return Actor(self.name if self.token_id else "", self.token_id, request_id_var.get() or "")


# AUTH_MODE=none: every caller, and what WhoAmI answers.
ANONYMOUS = Principal("", "anonymous", ADMIN, "", pb.Token(name="anonymous", role=ADMIN))

# Bound by the hook for the call; unbound (None) means the hook did not run: nobody.
principal_var: ContextVar[Principal | None] = ContextVar("principal", default=None)


def current() -> Principal:
    principal = principal_var.get()
    if principal is None:  # a servicer reached without the hook: refuse rather than trust
        raise Unauthenticated(_MISSING)
    return principal


def check_namespace(namespace: str, what: str) -> None:
    """PermissionDenied when the caller is limited to another namespace than `namespace`.

    The message never names `namespace`: for a stored task or execution it is another team's, and
    a caller that may not see the object must not learn where it lives."""
    mine = current().namespace
    if mine and namespace != mine:
        raise PermissionDenied(f"{what} is not in namespace {mine!r}, the one this token is limited to")


def check_command_targets(what: str) -> None:
    """PermissionDenied unless the caller may create command targets: a command runs a program
    on an executor's host, which an editor's http or log target cannot."""
    principal = current()
    if not principal.may_create_command_targets:
        raise PermissionDenied(
            f"{what} is a command target: that needs an admin token or one created with "
            f"allow_command_targets; this token ({_role(principal.role)}) has neither"
        )


def list_namespace(requested: str) -> str:
    """The namespace a listing is limited to: the one asked for ("" = all the caller may see),
    forced to the caller's own for a token limited to a namespace."""
    mine = current().namespace
    if mine and requested and requested != mine:
        raise PermissionDenied(
            f"namespace {requested!r} is not visible to this token (limited to namespace {mine!r})"
        )
    return mine or requested


_MISSING = "missing credentials: send the metadata `authorization: Bearer <token>`"
# One message for unknown, revoked and expired tokens: a caller learns nothing about which.
_INVALID = "invalid token: it is unknown, revoked or expired"
# Bound of the verified-token cache per replica (entries are a few hundred bytes).
CACHE_ENTRIES = 10_000
# How often a replica re-reads the store's clock to judge token expiry.
CLOCK_REFRESH_S = 5.0


def bearer(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    """The token of `authorization: Bearer <token>`; None when there is none."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return ""
    return None


def principal_of(token: StoredToken) -> Principal:
    return Principal(token.id, token.name, token.role, token.namespace, token.to_proto())


class Authenticator:
    """The api's authentication hook, with its per-replica cache of verified tokens."""

    def __init__(
        self,
        tokens: TokenStore,
        mode: str,
        cache_s: float,
        clock: Callable[[], Awaitable[int]],
        limiter: RateLimiter | None = None,
    ) -> None:
        self.tokens = tokens
        self.limiter = limiter or RateLimiter(0, 1)
        self.enabled = mode != "none"
        self.cache_s = cache_s
        self.clock = clock  # the store's (Redis TIME), in ms
        self._clock_offset_ms = 0.0
        self._clock_checked = float("-inf")
        # secret digest -> (monotonic deadline, Principal, or None for a token found invalid)
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def __call__(self, method: str, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        rule = RULES.get(method)
        if rule is None:  # health, reflection
            return
        if not self.enabled:
            principal_var.set(ANONYMOUS)
            return
        secret = bearer(metadata)
        if secret is None:
            raise Unauthenticated(_MISSING)
        if not secret or len(secret) > MAX_BEARER:
            raise Unauthenticated(_INVALID)
        principal = await self.verify(secret)
        if principal is None:
            raise Unauthenticated(_INVALID)
        self.limiter.take(principal.token_id, principal.name)
        if principal.role < rule.role:
            raise PermissionDenied(
                f"{method.rsplit('/', 1)[1]} needs the {_role(rule.role)} role; this token is "
                f"{_role(principal.role)}"
            )
        if rule.cluster_wide and principal.namespace:
            raise PermissionDenied(
                f"{method.rsplit('/', 1)[1]} covers every namespace: it needs a token not limited to "
                f"one (this one is limited to {principal.namespace!r})"
            )
        principal_var.set(principal)

    async def verify(self, secret: str) -> Principal | None:
        """The token's Principal if it is valid now, from the cache or the store."""
        key = digest(secret)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            found = await self.tokens.lookup(key)
            principal = principal_of(found) if found is not None and found.revoke_ms is None else None
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            if self.cache_s > 0:
                self._cache[key] = (now + self.cache_s, principal)
        if principal is None:
            return None
        expire_ms = principal.expire_ms
        if expire_ms is not None and await self.now_ms() >= expire_ms:
            return None
        return principal

    async def now_ms(self) -> float:
        """The store's clock (docs/guarantees.md, promise 4), read at most every CLOCK_REFRESH_S and
        extended with this replica's own clock in between: a replica whose wall clock is off
        neither refuses tokens early nor accepts expired ones."""
        local = time.time() * 1000
        if time.monotonic() >= self._clock_checked + CLOCK_REFRESH_S:
            try:
                self._clock_offset_ms = await self.clock() - local
                self._clock_checked = time.monotonic()
            except StoreUnavailable:  # keep the last offset: a token cached meanwhile still works
                pass
        return local + self._clock_offset_ms

    def forget(self, token_id: str) -> None:
        """Drop a token from this replica's cache (it was just revoked here)."""
        for key in [k for k, (_, p) in self._cache.items() if p is not None and p.token_id == token_id]:
            del self._cache[key]


def _role(role: int) -> str:
    return pb.Role.Name(role).removeprefix("ROLE_").lower() if role in pb.Role.values() else str(role)
