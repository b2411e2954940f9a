"""REDIS_SENTINELS: the api finds its Redis through Sentinel and follows a failover when the
master dies. Real processes: a master, a replica and a Sentinel (redis-server --sentinel), each on
a free port."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from schedcore import pb
from schedcore.settings import Settings, SettingsError
from schedcore.store.keys import Keys
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.helpers import TIMEOUT, once_task, stop_service
from tests.support import RedisServer, ServiceThread, free_port, wait_for

MASTER = "suite"


@contextlib.contextmanager
def sentinel_for(master: RedisServer) -> Iterator[redis.Redis]:
    folder = Path(tempfile.mkdtemp(prefix="test-sentinel-"))
    port = free_port()
    conf = folder / "sentinel.conf"  # Sentinel rewrites its file: it must be its own
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {MASTER} 1000\n"
        f"sentinel failover-timeout {MASTER} 5000\n"
    )
    proc = subprocess.Popen([master.binary, str(conf), "--sentinel"])
    client = redis.Redis(port=port, socket_connect_timeout=0.5, decode_responses=True)
    try:

        def up() -> bool:
            assert proc.poll() is None, (folder / "sentinel.log").read_text()
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, 10)
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def master_port(sentinel: redis.Redis) -> int:
    return int(sentinel.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)[1])


def test_api_follows_a_sentinel_failover() -> None:
    master, replica = RedisServer(), RedisServer()
    master.start()
    replica.start()
    service = None
    try:
        replica.client().replicaof("127.0.0.1", master.port)
        with sentinel_for(master) as sentinel:
            # REDIS_URL's host and port are ignored with Sentinel: this one would not answer.
            settings = api_settings(
                f"redis://127.0.0.1:{free_port()}/0",
                redis_sentinels=(("127.0.0.1", sentinel.connection_pool.connection_kwargs["port"]),),
                redis_sentinel_master=MASTER,
            )
            service = ServiceThread(build_api, settings)
            with grpc.insecure_channel(service.target) as channel:
                stub = pb.task_service_grpc.TaskServiceStub(channel)
                before = stub.CreateTask(pb.CreateTaskRequest(task=once_task("before")), timeout=TIMEOUT).task
                assert master.client().exists(Keys().task(before.id))
                assert master.client().execute_command("WAIT", 1, 10_000) == 1  # the replica has it

                # Sentinel learns about the replica from the master's INFO; then the master dies
                # (kill -9), Sentinel sees it down after a second and promotes the replica.
                wait_for(lambda: sentinel.execute_command("SENTINEL", "replicas", MASTER) != [], 30)
                assert master.proc is not None
                master.proc.send_signal(signal.SIGKILL)
                master.proc.wait(10)
                wait_for(lambda: master_port(sentinel) == replica.port, 30)

                def reads_through_new_master() -> bool:
                    try:
                        stub.GetTask(pb.GetTaskRequest(id=before.id), timeout=TIMEOUT)
                        stub.CreateTask(pb.CreateTaskRequest(task=once_task("after")), timeout=TIMEOUT)
                    except grpc.RpcError as err:
                        assert err.code() == grpc.StatusCode.UNAVAILABLE, err  # the switch, briefly
                        return False
                    return True

                wait_for(reads_through_new_master, 30, interval=0.2)
                (after,) = [
                    t
                    for t in stub.ListTasks(pb.ListTasksRequest(), timeout=TIMEOUT).tasks
                    if t.name == "after"
                ]
                assert replica.client().exists(Keys().task(after.id))  # written to the new master
    finally:
        if service is not None:
            stop_service(service)
        master.cleanup()
        replica.cleanup()


@pytest.mark.parametrize(
    ("value", "error"),
    [("host", "expected host:port"), ("a:1,b", "expected host:port"), ("a:0", "expected host:port")],
)
def test_bad_sentinel_lists_are_refused(value: str, error: str) -> None:
    with pytest.raises(SettingsError, match=error):
        Settings.from_env({"REDIS_SENTINELS": value})


def test_sentinels_are_parsed() -> None:
    s = Settings.from_env(
        {"REDIS_SENTINELS": "s1:26379, [::1]:26380", "REDIS_SENTINEL_MASTER": "m", "GRPC_PLAINTEXT": "true"}
    )
    assert s.redis_sentinels == (("s1", 26379), ("::1", 26380))
    assert s.redis_sentinel_master == "m"
    with pytest.raises(SettingsError, match="REDIS_URL must be"):
        Settings.from_env({"REDIS_SENTINELS": "s1:26379", "REDIS_URL": "unix:///tmp/redis.sock"})
