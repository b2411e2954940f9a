"""The dashboard's only way to the api: a small synchronous gRPC client.

Every call has a deadline (a page never waits long on a stuck api) and every failure becomes an
ApiError carrying the status, the message and the field violations of INVALID_ARGUMENT, so
pages can show an error next to the field it names.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import pb
from schedcore.channels import API_OPTIONS, ChannelSecurity, channel
from schedcore.errors import field_violations
from schedcore.settings import parse_bool

DEFAULT_ADDR = "localhost:50051"
# Reads answer in milliseconds; a call that takes longer than this is stuck, not slow.
TIMEOUT_S = 4.0
# TestChannel waits for the channel's answer, up to the deployment's ALERT_TIMEOUT_SECONDS (10 s by
# default) for a webhook, longer for a slow SMTP server.
SEND_TIMEOUT_S = 30.0

R = TypeVar("R")


def api_addr() -> str:
    return os.environ.get("API_ADDR", "").strip() or DEFAULT_ADDR


def api_security() -> ChannelSecurity:
    """TLS to the api, the services' variables (docs/configuration.md): TLS_CA_FILE (empty:
    gRPC's default roots), TLS_CERT_FILE and TLS_KEY_FILE (a client certificate, optional);
    plaintext only with GRPC_PLAINTEXT=true (or 1, yes, on: the services' parser)."""
    return ChannelSecurity.for_client(
        parse_bool(os.environ, "GRPC_PLAINTEXT", False),
        os.environ.get("TLS_CA_FILE", "").strip(),
        os.environ.get("TLS_CERT_FILE", "").strip(),
        os.environ.get("TLS_KEY_FILE", "").strip(),
    )


@dataclass
class ApiError(Exception):
    code: grpc.StatusCode
    message: str
    fields: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @property
    def unreachable(self) -> bool:
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    def field_error(self, *paths: str) -> str | None:
        """The violation naming one of `paths` or a field inside one (joined when several)."""
        found = [
            desc
            for name, desc in self.fields.items()
            if any(name == p or name.startswith((p + ".", p + "[")) for p in paths)
        ]
        return "; ".join(found) or None

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> ApiError:
        code: grpc.StatusCode = err.code()
        message: str = err.details() or code.name
        fields: dict[str, str] = {}
        for field_path, description in field_violations(err):
            fields[field_path] = (
                f"{fields[field_path]}; {description}" if field_path in fields else description
            )
        return cls(code, message, fields)


class Api:
    """Calls to the api over one channel. `as_user(token)` gives a view of the same channel whose
    calls carry the token; the token lives only in that object (and the caller's session), never
    in a log line or a URL."""

    def __init__(
        self, addr: str, timeout_s: float = TIMEOUT_S, security: ChannelSecurity | None = None
    ) -> None:
        self.addr = addr
        self.timeout_s = timeout_s
        self.channel = channel(addr, security or api_security(), API_OPTIONS)
        self.stub = pb.task_service_grpc.TaskServiceStub(self.channel)
        self.auth = pb.auth_service_grpc.AuthServiceStub(self.channel)
        self.audit = pb.audit_service_grpc.AuditServiceStub(self.channel)
        self.alerts = pb.alert_service_grpc.AlertServiceStub(self.channel)
        self._metadata: tuple[tuple[str, str], ...] = ()

    def as_user(self, token: str) -> Api:
        """This client, with every call carrying `token` as its bearer token ("" for none)."""
        view = copy.copy(self)
        view._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return view

    def __repr__(self) -> str:  # never show the metadata (it holds the token)
        return f"Api({self.addr!r})"

    def _call(self, method: Callable[..., R], request: Any, timeout_s: float | None = None) -> R:
        try:
            return method(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as err:
            raise ApiError.from_rpc(err) from None

    # --- identity ------------------------------------------------------------------------------

    def whoami(self) -> pb.Token:
        """The token the calls carry (an anonymous admin when the api runs without authentication);
        UNAUTHENTICATED when the api wants a token and this one is missing or not valid."""
        return self._call(self.auth.WhoAmI, pb.WhoAmIRequest()).token

    def create_token(
        self, name: str, role: int, namespace: str, ttl_s: int | None, *, allow_command_targets: bool = False
    ) -> tuple[pb.Token, str]:
        """(the token, its secret): the secret is shown once and not kept by the api."""
        request = pb.CreateTokenRequest(
            token=pb.Token(
                name=name,
                role=role,  # type: ignore[arg-type]
                namespace=namespace,
                allow_command_targets=allow_command_targets,
            )
        )
        if ttl_s:
            request.ttl.FromSeconds(ttl_s)
        reply = self._call(self.auth.CreateToken, request)
        return reply.token, reply.secret

    def list_tokens(self, *, show_revoked: bool, page_size: int, page_token: str) -> pb.ListTokensResponse:
        request = pb.ListTokensRequest(show_revoked=show_revoked, page_size=page_size, page_token=page_token)
        return self._call(self.auth.ListTokens, request)

    def revoke_token(self, token_id: str) -> pb.Token:
        return self._call(self.auth.RevokeToken, pb.RevokeTokenRequest(id=token_id)).token

    def list_audit_events(
        self, *, task_id: str = "", namespace: str = "", page_size: int = 50, page_token: str = ""
    ) -> pb.ListAuditEventsResponse:
        request = pb.ListAuditEventsRequest(
            task_id=task_id, namespace=namespace, page_size=page_size, page_token=page_token
        )
        return self._call(self.audit.ListAuditEvents, request)

    # --- tasks ---------------------------------------------------------------------------------

    def create_task(self, task: pb.Task, request_id: str, *, validate_only: bool = False) -> pb.Task:
        """`validate_only`: the api checks the request and creates nothing."""
        request = pb.CreateTaskRequest(task=task, request_id=request_id, validate_only=validate_only)
        return self._call(self.stub.CreateTask, request).task

    def get_task(self, task_id: str) -> pb.Task:
        return self._call(self.stub.GetTask, pb.GetTaskRequest(id=task_id)).task

    def list_tasks(
        self,
        *,
        page_size: int = 50,
        page_token: str = "",
        state: int = 0,
        labels: dict[str, str] | None = None,
        name_contains: str = "",
        by_next_run: bool = False,
    ) -> pb.ListTasksResponse:
        order = pb.TaskOrder.TASK_ORDER_NEXT_RUN_TIME if by_next_run else pb.TaskOrder.TASK_ORDER_NAME
        request = pb.ListTasksRequest(
            page_size=page_size,
            page_token=page_token,
            state=state,  # type: ignore[arg-type]
            labels=labels or {},
            name_contains=name_contains,
            order_by=order,
        )
        return self._call(self.stub.ListTasks, request)

    def update_task(self, task: pb.Task, paths: Iterable[str], *, validate_only: bool = False) -> pb.Task:
        """`validate_only`: the api checks the request and changes nothing."""
        request = pb.UpdateTaskRequest(
            task=task, update_mask=FieldMask(paths=list(paths)), validate_only=validate_only
        )
        return self._call(self.stub.UpdateTask, request).task

    def delete_task(self, task_id: str, etag: str = "") -> None:
        self._call(self.stub.DeleteTask, pb.DeleteTaskRequest(id=task_id, etag=etag))

    def pause_task(self, task_id: str, etag: str = "") -> pb.Task:
        return self._call(self.stub.PauseTask, pb.PauseTaskRequest(id=task_id, etag=etag)).task

    def resume_task(self, task_id: str, etag: str = "") -> pb.Task:
        return self._call(self.stub.ResumeTask, pb.ResumeTaskRequest(id=task_id, etag=etag)).task

    def run_task(self, task_id: str) -> pb.Execution:
        return self._call(self.stub.RunTask, pb.RunTaskRequest(id=task_id)).execution

    def cancel_execution(self, execution_id: str, reason: str = "") -> pb.Execution:
        request = pb.CancelExecutionRequest(id=execution_id, reason=reason)
        return self._call(self.stub.CancelExecution, request).execution

    def rerun_execution(self, execution_id: str) -> pb.Execution:
        return self._call(self.stub.RerunExecution, pb.RerunExecutionRequest(id=execution_id)).execution

    def preview(self, schedule: pb.Schedule, count: int = 5) -> list[int]:
        """Next fire times (ms since the epoch)."""
        reply = self._call(
            self.stub.PreviewSchedule, pb.PreviewScheduleRequest(schedule=schedule, count=count)
        )
        return [t.ToMilliseconds() for t in reply.fire_times]

    # --- executions ----------------------------------------------------------------------------

    def list_executions(
        self,
        *,
        task_id: str = "",
        status: int = 0,
        start_ms: int | None = None,
        end_ms: int | None = None,
        page_size: int = 50,
        page_token: str = "",
    ) -> pb.ListExecutionsResponse:
        request = pb.ListExecutionsRequest(
            task_id=task_id,
            status=status,  # type: ignore[arg-type]
            page_size=page_size,
            page_token=page_token,
        )
        if start_ms is not None:
            request.start_time.FromMilliseconds(start_ms)
        if end_ms is not None:
            request.end_time.FromMilliseconds(end_ms)
        return self._call(self.stub.ListExecutions, request)

    def get_execution(self, execution_id: str) -> pb.Execution:
        return self._call(self.stub.GetExecution, pb.GetExecutionRequest(id=execution_id)).execution

    def stats(self, window_s: int, bucket_s: int) -> pb.GetStatsResponse:
        request = pb.GetStatsRequest(
            window=Duration(seconds=window_s), bucket_width=Duration(seconds=bucket_s)
        )
        return self._call(self.stub.GetStats, request)

    # --- alerts --------------------------------------------------------------------------------

    def list_channels(
        self, *, namespace: str = "", page_size: int = 50, page_token: str = ""
    ) -> pb.ListChannelsResponse:
        request = pb.ListChannelsRequest(namespace=namespace, page_size=page_size, page_token=page_token)
        return self._call(self.alerts.ListChannels, request)

    def get_channel(self, channel_id: str) -> pb.Channel:
        return self._call(self.alerts.GetChannel, pb.GetChannelRequest(id=channel_id)).channel

    def create_channel(self, channel: pb.Channel) -> pb.Channel:
        return self._call(self.alerts.CreateChannel, pb.CreateChannelRequest(channel=channel)).channel

    def update_channel(self, channel: pb.Channel) -> pb.Channel:
        """`channel.etag` set: ABORTED if the channel changed since that version was read. Secrets
        sent empty keep the stored ones (by position)."""
        return self._call(self.alerts.UpdateChannel, pb.UpdateChannelRequest(channel=channel)).channel

    def delete_channel(self, channel_id: str, etag: str = "") -> None:
        self._call(self.alerts.DeleteChannel, pb.DeleteChannelRequest(id=channel_id, etag=etag))

    def test_channel(self, channel_id: str) -> pb.TestChannelResponse:
        """Sends a test notification now, and says whether the channel took it."""
        return self._call(self.alerts.TestChannel, pb.TestChannelRequest(id=channel_id), SEND_TIMEOUT_S)

    def list_notifications(
        self, task_id: str, *, page_size: int = 50, page_token: str = ""
    ) -> pb.ListNotificationsResponse:
        request = pb.ListNotificationsRequest(task_id=task_id, page_size=page_size, page_token=page_token)
        return self._call(self.alerts.ListNotifications, request)
