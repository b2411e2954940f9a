"""The connection to the api: address, credentials and deadline from flags or the environment."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import grpc

from schedcore import pb

DEFAULT_API = "localhost:50051"
DEFAULT_TIMEOUT_S = 30.0
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def default_api() -> str:
    return os.environ.get("API_ADDR", "").strip() or DEFAULT_API


def default_token() -> str:
    return os.environ.get("SCHEDCTL_TOKEN", "").strip()


class Client:
    """TaskService calls with the caller's token (`authorization: Bearer ...`) and a deadline.

    The token is sent as call metadata and never printed."""

    def __init__(self, address: str, token: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = pb.task_service_grpc.TaskServiceStub(self.channel)
        self.timeout_s = timeout_s
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()

    def call(self, method: Callable[..., Resp], request: Req) -> Resp:
        return method(request, timeout=self.timeout_s, metadata=self.metadata)

    def close(self) -> None:
        self.channel.close()
