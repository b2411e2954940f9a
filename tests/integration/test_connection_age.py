"""MAX_CONNECTION_AGE_SECONDS: the api ends each client connection when it is that old, so a
client re-resolves the service's name and reaches replicas added since (Kubernetes scale-out);
calls keep working across the reconnection."""

from __future__ import annotations

import threading

import grpc

from schedcore import pb
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.helpers import TIMEOUT, stop_service
from tests.support import RedisServer, ServiceThread, wait_for


def test_api_ends_old_connections_and_clients_reconnect(redis_srv: RedisServer, rds) -> None:
    service = ServiceThread(build_api, api_settings(redis_srv.url, max_connection_age_s=1.0))
    states: list[grpc.ChannelConnectivity] = []
    lock = threading.Lock()

    def record(state: grpc.ChannelConnectivity) -> None:
        with lock:
            states.append(state)

    def dropped_after_ready() -> bool:
        with lock:
            seen = list(states)
        ready = [i for i, s in enumerate(seen) if s == grpc.ChannelConnectivity.READY]
        return bool(ready) and grpc.ChannelConnectivity.IDLE in seen[ready[0] :]

    try:
        with grpc.insecure_channel(service.target) as channel:
            channel.subscribe(record)
            stub = pb.task_service_grpc.TaskServiceStub(channel)
            stub.ListTasks(pb.ListTasksRequest(), timeout=TIMEOUT)
            # The server sends GOAWAY once the connection is a second old (give or take its
            # jitter): the channel goes idle, and the next call opens a new connection.
            wait_for(dropped_after_ready, 20)
            stub.ListTasks(pb.ListTasksRequest(), timeout=TIMEOUT)
            channel.unsubscribe(record)
    finally:
        stop_service(service)
