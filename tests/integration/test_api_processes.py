"""API_PROCESSES: several api server processes on one port under a supervising parent, as real
processes (`python -m services.api`): both serve calls, SIGTERM drains both, a dead one stops
the pod."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest
import redis

from schedcore import pb
from tests.integration.test_api_process import ROOT, ApiProcess, api_process, process_env
from tests.support import RedisServer, free_port, wait_for

PROCESSES = 2
CALLS = 40
CREATE = "/scheduler.v1.TaskService/CreateTask"


def metrics_base() -> int:
    """A free port with the next one free too (METRICS_PORT + index)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.create_server(("127.0.0.1", port + 1)):
                return port
        except OSError:
            continue
    raise AssertionError("no two consecutive free ports")


@pytest.fixture()
def pod(tmp_path: Path, redis_srv: RedisServer) -> Iterator[ApiProcess]:
    with api_process(
        tmp_path,
        redis_srv.url,
        grace_s=10.0,
        API_PROCESSES=str(PROCESSES),
        METRICS_PORT=str(metrics_base()),
    ) as api:
        wait_for(lambda: len(listening(api)) == PROCESSES, timeout=20)
        yield api


def listening(api: ApiProcess) -> dict[int, dict[str, object]]:
    """The server processes' "api listening" lines, by process index."""
    return {
        int(str(line["process_index"])): line
        for line in api.log_lines()
        if line["msg"] == "api listening" and "process_index" in line
    }


def server_pids(api: ApiProcess) -> list[int]:
    return [int(str(line["pid"])) for _, line in sorted(listening(api).items())]


def fresh_channel(api: ApiProcess) -> grpc.Channel:
    # A local subchannel pool: a new TCP connection, which the kernel gives to either process.
    return grpc.insecure_channel(api.target, options=[("grpc.use_local_subchannel_pool", 1)])


def create_request(i: int) -> pb.CreateTaskRequest:
    return pb.CreateTaskRequest(
        task=pb.Task(
            name=f"procs {i}",
            schedule=pb.Schedule(cron=pb.CronSchedule(expression="0 0 1 1 *")),
            target=pb.Target(log=pb.LogTarget()),
        )
    )


def created_count(metrics_port: int) -> float:
    """CreateTask calls answered OK, from one server process' own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    prefix = f'tasksched_rpc_handled_total{{code="OK",method="{CREATE}"}} '
    found = [float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)]
    return found[0] if found else 0.0


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def tcp_local_ports(pid: int) -> set[int]:
    """Local ports of the TCP sockets `pid` holds (from /proc: its fds' inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_two_server_processes_answer_calls_on_one_port(pod: ApiProcess) -> None:
    lines = listening(pod)
    pids = server_pids(pod)
    assert len(set(pids)) == PROCESSES
    assert {line["port"] for line in lines.values()} == {pod.port}
    assert all(parent_of(pid) == pod.proc.pid for pid in pids)
    for i in range(CALLS):
        with fresh_channel(pod) as channel:
            pb.task_service_grpc.TaskServiceStub(channel).CreateTask(create_request(i), timeout=10)
    base = int(pod.env["METRICS_PORT"])
    counts = [created_count(base + index) for index in range(PROCESSES)]
    # Each process counts the calls it served: together all of them, and each some.
    assert sum(counts) == CALLS
    assert all(count > 0 for count in counts), counts


def test_sigterm_drains_every_process_and_the_parent_exits_0(pod: ApiProcess, redis_srv: RedisServer) -> None:
    client = redis.Redis(port=redis_srv.port)
    pids = server_pids(pod)
    channels = [fresh_channel(pod) for _ in range(CALLS // 2)]
    try:
        # Writes wait while Redis is paused: the calls are in flight in the servers when SIGTERM comes.
        client.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        calls: list[Future[pb.CreateTaskResponse]] = [
            pb.task_service_grpc.TaskServiceStub(channel).CreateTask.future(create_request(i), timeout=30)
            for i, channel in enumerate(channels)
        ]
        wait_for(lambda: int(client.info("clients")["blocked_clients"]) >= len(calls), timeout=10)
        blocked = {int(c["addr"].rsplit(":", 1)[1]) for c in client.client_list() if "b" in c["flags"]}
        holders = {pid for pid in pids if tcp_local_ports(pid) & blocked}
        assert holders == set(pids), "both processes hold calls waiting on Redis"
        pod.proc.send_signal(signal.SIGTERM)
        wait_for(
            lambda: sum(line["msg"] == "api shutting down" for line in pod.log_lines()) == PROCESSES,
            timeout=10,
        )
        client.execute_command("CLIENT", "UNPAUSE")
        for call in calls:
            assert call.result(timeout=30).task.name.startswith("procs ")
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
        for channel in channels:
            channel.close()
    assert pod.proc.wait(30) == 0, pod.stderr()
    stopped = {line["pid"] for line in pod.log_lines() if line["msg"] == "api stopped"}
    assert stopped == set(pids)


def test_a_killed_process_stops_the_others_and_the_parent_exits_1(pod: ApiProcess) -> None:
    victim, survivor = server_pids(pod)
    os.kill(victim, signal.SIGKILL)
    assert pod.proc.wait(30) == 1, pod.stderr()
    lines = pod.log_lines()
    died = [line for line in lines if line["msg"].endswith("exited unexpectedly; stopping the others")]
    assert [(line["pid"], line["exitcode"]) for line in died] == [(victim, -signal.SIGKILL)]
    # The survivor drained as on SIGTERM, and the parent reaped it: no server is left.
    assert any(line["msg"] == "api stopped" and line["pid"] == survivor for line in lines)
    assert not Path(f"/proc/{survivor}").exists()


def test_several_processes_need_a_fixed_port() -> None:
    # GRPC_PORT=0 would give each server process a port of its own: refused at start, status 2.
    env = process_env(
        REDIS_URL="redis://127.0.0.1:1/0", GRPC_HOST="127.0.0.1", GRPC_PORT="0", API_PROCESSES="2"
    )
    done = subprocess.run(
        [sys.executable, "-m", "services.api"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, done.stderr
    assert "api: configuration error: GRPC_PORT: " in done.stderr
    assert done.stdout == ""  # no server process was started
