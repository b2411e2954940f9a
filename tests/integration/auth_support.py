"""Support for the tests of authentication, namespaces and the audit trail: an api with
AUTH_MODE=token and a bootstrap token, clients that carry a token, and calls by descriptor."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from schedcore import pb
from services.api.access import PUBLIC_SERVICES
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.helpers import TIMEOUT
from tests.support import RedisServer, ServiceThread

BOOTSTRAP = "boot-" + secrets.token_urlsafe(32)
VIEWER = pb.Role.ROLE_VIEWER
EDITOR = pb.Role.ROLE_EDITOR
ADMIN = pb.Role.ROLE_ADMIN


def every_method() -> list[tuple[ServiceDescriptor, MethodDescriptor]]:
    """Every RPC of the public services, from the descriptors: a new RPC is covered at once."""
    return [(service, method) for service in PUBLIC_SERVICES for method in service.methods]


def method_id(item: tuple[ServiceDescriptor, MethodDescriptor]) -> str:
    return f"{item[0].name}.{item[1].name}"


def empty_request(method: MethodDescriptor) -> Message:
    return message_factory.GetMessageClass(method.input_type)()


def raw_call(
    channel: grpc.Channel,
    service: ServiceDescriptor,
    method: MethodDescriptor,
    request: Message,
    metadata: Sequence[tuple[str, str]] = (),
) -> Message:
    out = message_factory.GetMessageClass(method.output_type)
    rpc = channel.unary_unary(
        f"/{service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=out.FromString,
    )
    return rpc(request, metadata=tuple(metadata), timeout=TIMEOUT)  # type: ignore[no-any-return]


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


class Caller:
    """Stubs of the public services whose calls carry one token (or none)."""

    def __init__(self, channel: grpc.Channel, secret: str | None, request_id: str = "") -> None:
        self.channel = channel
        self.secret = secret
        self.metadata: tuple[tuple[str, str], ...] = bearer(secret) if secret is not None else ()
        if request_id:
            self.metadata += (("x-request-id", request_id),)
        self.tasks = _Bound(pb.task_service_grpc.TaskServiceStub(channel), self.metadata)
        self.auth = _Bound(pb.auth_service_grpc.AuthServiceStub(channel), self.metadata)
        self.audit = _Bound(pb.audit_service_grpc.AuditServiceStub(channel), self.metadata)
        self.alerts = _Bound(pb.alert_service_grpc.AlertServiceStub(channel), self.metadata)

    def with_request_id(self, request_id: str) -> Caller:
        return Caller(self.channel, self.secret, request_id)

    def new_token(
        self, name: str, role: int, namespace: str = "", ttl_s: float | None = None
    ) -> tuple[pb.Token, str]:
        request = pb.CreateTokenRequest(token=pb.Token(name=name, role=role, namespace=namespace))  # type: ignore[arg-type]
        if ttl_s is not None:
            request.ttl.FromMilliseconds(int(ttl_s * 1000))
        reply = self.auth.CreateToken(request)
        return reply.token, reply.secret

    def as_token(self, secret: str) -> Caller:
        return Caller(self.channel, secret)


class _Bound:
    """A stub whose every call carries the metadata and the tests' deadline."""

    def __init__(self, stub: object, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> object:
        method = getattr(self._stub, name)

        def call(request: Message, timeout: float = TIMEOUT, **kw: object) -> object:
            return method(request, metadata=self._metadata, timeout=timeout, **kw)

        return call


@dataclass
class AuthApi:
    service: ServiceThread
    channel: grpc.Channel

    def caller(self, secret: str | None) -> Caller:
        return Caller(self.channel, secret)

    @property
    def admin(self) -> Caller:
        return Caller(self.channel, BOOTSTRAP)


def start_auth_api(redis_srv: RedisServer, **overrides: object) -> ServiceThread:
    settings = api_settings(redis_srv.url, auth_mode="token", auth_bootstrap_token=BOOTSTRAP, **overrides)
    return ServiceThread(build_api, settings)
