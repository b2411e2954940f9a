"""Stopping the api: GrpcService.stop() must return promptly, every time."""

from __future__ import annotations

import warnings

import grpc

from schedcore import pb
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.helpers import TIMEOUT, stop_service
from tests.support import ServiceThread

CYCLES = 40


def test_stop_returns_promptly_every_time(redis_srv):
    """Start the api, serve a call, stop it; many times over. stop() cancels the health loop and
    awaits it: if the loop swallows that one cancellation, stop() never returns (SIGTERM would
    hang the process until it is killed)."""
    for cycle in range(CYCLES):
        service = ServiceThread(build_api, api_settings(redis_srv.url))
        with grpc.insecure_channel(service.target) as channel:
            stub = pb.task_service_grpc.TaskServiceStub(channel)
            stub.ListTasks(pb.ListTasksRequest(page_size=1), timeout=TIMEOUT)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            in_time = stop_service(service, bound=2.0)
        assert in_time, f"GrpcService.stop() did not return within 2 s (cycle {cycle + 1} of {CYCLES})"
