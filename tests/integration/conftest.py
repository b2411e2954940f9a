"""Fixtures shared by several integration test modules: pytest finds them here, so no test
module imports or re-exports another's fixtures."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from tests.integration.auth_support import AuthApi, start_auth_api
from tests.integration.helpers import stop_service
from tests.integration.slow_target import SlowTarget
from tests.integration.test_executor import HttpServer
from tests.support import RedisServer


@pytest.fixture()
def open_dir() -> Iterator[Path]:
    """A directory every user may enter and write (pytest's tmp_path is its runner's only)."""
    path = Path(tempfile.mkdtemp(prefix="cmd-test-"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def auth_api(redis_srv: RedisServer, rds: redis.Redis) -> Iterator[AuthApi]:
    """An api requiring tokens, on a flushed Redis, with BOOTSTRAP as its admin token."""
    service = start_auth_api(redis_srv)
    with grpc.insecure_channel(service.target) as channel:
        yield AuthApi(service, channel)
    stop_service(service)


@pytest.fixture()
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    for name in list(server._gates):
        server.gate(name).set()
    server.shutdown()
    server.server_close()


@pytest.fixture()
def target() -> Iterator[SlowTarget]:
    """A slow http target in a thread of its own (tests/integration/slow_target.py)."""
    t = SlowTarget()
    threading.Thread(target=t.serve, daemon=True).start()
    yield t
