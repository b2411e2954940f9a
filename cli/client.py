"""The connection to the api: address, credentials and deadline from flags or the environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import grpc

from schedcore import pb
from schedcore.channels import API_OPTIONS, ChannelSecurity, channel
from schedcore.settings import parse_bool

DEFAULT_API = "localhost:50051"
DEFAULT_TIMEOUT_S = 30.0
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def default_api() -> str:
    return os.environ.get("API_ADDR", "").strip() or DEFAULT_API


def default_token() -> str:
    return os.environ.get("SCHEDCTL_TOKEN", "").strip()


def security(plaintext: bool | None, ca: str | None, cert: str | None, key: str | None) -> ChannelSecurity:
    """TLS to the api: flags first, then SCHEDCTL_PLAINTEXT, SCHEDCTL_TLS_CA, SCHEDCTL_TLS_CERT,
    SCHEDCTL_TLS_KEY (docs/cli.md). SettingsError when they contradict each other."""

    def env(name: str) -> str:
        return os.environ.get(name, "").strip()

    return ChannelSecurity.for_client(
        plaintext if plaintext is not None else parse_bool(os.environ, "SCHEDCTL_PLAINTEXT", False),
        ca or env("SCHEDCTL_TLS_CA"),
        cert or env("SCHEDCTL_TLS_CERT"),
        key or env("SCHEDCTL_TLS_KEY"),
        names=("--tls-ca", "--tls-cert", "--tls-key"),
        plaintext_name="--plaintext",
    )


# Largest page the api serves (docs/api.md).
MAX_PAGE = 1000


class Client:
    """TaskService, AuthService, AuditService and AlertService calls with the caller's token
    (`authorization: Bearer ...`) and a deadline.

    The token is sent as call metadata and never printed."""

    def __init__(
        self,
        address: str,
        token: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        tls: ChannelSecurity | None = None,
    ) -> None:
        self.channel = channel(address, tls or ChannelSecurity(plaintext=False), API_OPTIONS)
        self.stub = pb.task_service_grpc.TaskServiceStub(self.channel)
        self.auth = pb.auth_service_grpc.AuthServiceStub(self.channel)
        self.audit = pb.audit_service_grpc.AuditServiceStub(self.channel)
        self.alerts = pb.alert_service_grpc.AlertServiceStub(self.channel)
        self.timeout_s = timeout_s
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()

    def call(self, method: Callable[..., Resp], request: Req) -> Resp:
        return method(request, timeout=self.timeout_s, metadata=self.metadata)

    def pages(
        self, method: Callable[..., Any], request: Any, field: str, limit: int | None
    ) -> tuple[list[Any], str]:
        """Call a List method page after page until `limit` items (None: all of them).
        Returns the items and the token of what follows ("" at the end)."""
        found: list[Any] = []
        while True:
            request.page_size = MAX_PAGE if limit is None else min(MAX_PAGE, limit - len(found))
            page = self.call(method, request)
            found += getattr(page, field)
            request.page_token = page.next_page_token
            if not page.next_page_token or (limit is not None and len(found) >= limit):
                return found, request.page_token

    def task_names(self, ids: Iterable[str]) -> dict[str, str]:
        """The name of each task named in `ids` (one GetTask per distinct id), for the tables
        people read; "(deleted)" for a task that is gone, "?" for one this token may not read."""
        names: dict[str, str] = {}
        for task_id in dict.fromkeys(i for i in ids if i):
            try:
                names[task_id] = self.call(self.stub.GetTask, pb.GetTaskRequest(id=task_id)).task.name
            except grpc.RpcError as err:
                if err.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                    raise
                names[task_id] = "(deleted)" if err.code() == grpc.StatusCode.NOT_FOUND else "?"
        return names

    def close(self) -> None:
        self.channel.close()
