"""Bring the suite up locally (`make run`): Redis, the api and whichever other services exist.

Without REDIS_URL a redis-server of our own runs on 127.0.0.1:LOCAL_REDIS_PORT (default 6390)
with its append-only file in .data/redis/. Services come from services() and start only once
their code exists; replica i of a service listens on its base port + 10*i. Ctrl-C or SIGTERM
stops the services first (SIGTERM; they drain within SHUTDOWN_GRACE_SECONDS), then Redis, so the
AOF is flushed. If a child exits on its own, everything stops and the exit status is 1.
With METRICS_PORT set, the gRPC services serve /metrics on it and the ports after it, one each
in start order (api, schedulers, executors; the api one per server process, API_PROCESSES);
unset, none does.
gRPC is plaintext (GRPC_PLAINTEXT=true) unless TLS_CERT_FILE and TLS_KEY_FILE are set: then every
service serves TLS with them (the certificate must name localhost) and TLS_CA_FILE verifies them.
One certificate for all means no service can be told from another, so the executors take streams
from any client (EXECUTOR_ALLOWED_CLIENTS=*) unless EXECUTOR_ALLOWED_CLIENTS is set.

Authentication stays on (AUTH_MODE=token): a development admin token is created once, kept in
.data/dev-admin-token (git-ignored, readable by you only), given to the api as
AUTH_BOOTSTRAP_TOKEN and printed with the addresses, to paste into the dashboard or export as
SCHEDCTL_TOKEN. `rm -rf .data` forgets it with the data. Secret header and command environment
values are sealed at rest with a development key kept the same way in .data/secret-keys
(SECRET_KEYS of the api, the schedulers, which open alert channels' secrets, and the
executors). Started as root with EXECUTOR_COMMAND_TARGETS=true, executors run programs as
`nobody` unless EXECUTOR_COMMAND_USER says otherwise.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schedcore.channels import ChannelSecurity, channel
from schedcore.envparse import SettingsError, parse_bool
from schedcore.supervisor import process_count

ROOT = Path(__file__).resolve().parent.parent
DEV_TOKEN_FILE = ROOT / ".data" / "dev-admin-token"
DEV_KEYS_FILE = ROOT / ".data" / "secret-keys"
_print_lock = threading.Lock()
_stop = threading.Event()
_data_lock: list[IO[str]] = []  # held until we exit: two redis-servers must never share one AOF


@dataclass(frozen=True)
class Service:
    name: str
    args: list[str]  # after `python`
    requires: str  # started only if this path (relative to the project) exists
    port: int
    ready: str = "grpc"  # grpc: Health/Check("") is SERVING; http: GET /_stcore/health is 200
    replicas_env: str = ""
    env: dict[str, str] = field(default_factory=dict)


def ui_args(port: int) -> list[str]:
    """How the dashboard is served, after `python` (the browser test and the image run this too)."""
    return ["-m", "streamlit", "run", "ui/app.py", "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]  # fmt: skip


def ui_command(python: str, port: int) -> list[str]:
    return [python, *ui_args(port)]


def kept_secret(path: Path, make: Callable[[], str]) -> str:
    """A development secret: read from `path`, or made and written there (mode 0600) the first time."""
    if path.exists():
        secret = path.read_text().strip()
        if secret:
            return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    return secret


def dev_token(path: Path = DEV_TOKEN_FILE) -> str:
    """The development admin token (AUTH_BOOTSTRAP_TOKEN of the api)."""
    from schedcore.store.tokens import new_secret

    return kept_secret(path, new_secret)


def dev_secret_keys(path: Path = DEV_KEYS_FILE) -> str:
    """The development key sealing secret values (SECRET_KEYS of the api, schedulers, executors)."""
    from schedcore.sealing import new_key

    return kept_secret(path, new_key)


def command_user_env() -> dict[str, str]:
    """Run as root with EXECUTOR_COMMAND_TARGETS=true, executors would refuse to start without a
    user to run programs as (docs/security.md, "Safe targets"): they get `nobody` unless you
    chose EXECUTOR_COMMAND_USER."""
    try:
        targets = parse_bool(os.environ, "EXECUTOR_COMMAND_TARGETS", False)
    except SettingsError:  # the executor refuses the value itself
        targets = False
    if targets and os.geteuid() == 0 and not os.environ.get("EXECUTOR_COMMAND_USER", "").strip():
        return {"EXECUTOR_COMMAND_USER": "nobody"}
    return {}


def services() -> list[Service]:
    api = env_int("API_PORT", 50051)
    ui_port = env_int("UI_PORT", 8501)
    ui_env = {"API_ADDR": f"localhost:{api}"}
    executor_env = {"EXECUTOR_ALLOWED_CLIENTS": os.environ.get("EXECUTOR_ALLOWED_CLIENTS", "").strip() or "*"}
    # Alert notifications link to the execution on this dashboard (docs/alerts.md).
    links = {"DASHBOARD_URL": os.environ.get("DASHBOARD_URL", "").strip() or f"http://localhost:{ui_port}"}
    return [
        Service("api", ["-m", "services.api"], "services/api/__main__.py", api, env=links),
        Service("scheduler", ["-m", "services.scheduler"], "services/scheduler/__main__.py", 50052,
                replicas_env="SCHEDULER_REPLICAS", env=links),
        Service("executor", ["-m", "services.executor"], "services/executor/__main__.py", 50053,
                replicas_env="EXECUTOR_REPLICAS", env=executor_env),
        Service("ui", ui_args(ui_port), "ui/app.py", ui_port, ready="http", env=ui_env),
    ]  # fmt: skip


@dataclass
class Child:
    name: str
    port: int
    ready: str  # redis, grpc or http
    proc: subprocess.Popen[bytes]
    pump: threading.Thread


def say(name: str, text: str) -> None:
    with _print_lock:
        print(f"{name:<12}| {text}", flush=True)


def fail(text: str) -> NoReturn:
    say("run_local", f"error: {text}")
    raise SystemExit(1)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    if not raw.isdigit():
        fail(f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "busy"
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def spawn(name: str, argv: list[str], port: int, ready: str, env: dict[str, str]) -> Child:
    # Own process group: Ctrl-C reaches only us, and we stop the children in order.
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        process_group=0,
    )
    stream = proc.stdout
    assert stream is not None

    def pump() -> None:
        for line in iter(stream.readline, b""):
            say(name, line.decode(errors="replace").rstrip())

    thread = threading.Thread(target=pump, name=f"pump-{name}", daemon=True)
    thread.start()
    return Child(name, port, ready, proc, thread)


def grpc_env() -> dict[str, str]:
    """Local development opts out of TLS explicitly, unless a certificate was given."""
    given = any(os.environ.get(n, "").strip() for n in ("TLS_CERT_FILE", "TLS_KEY_FILE", "GRPC_PLAINTEXT"))
    return {} if given else {"GRPC_PLAINTEXT": "true"}


def grpc_security() -> ChannelSecurity:
    env = {**os.environ, **grpc_env()}
    if env.get("GRPC_PLAINTEXT", "").strip().lower() == "true":
        return ChannelSecurity(plaintext=True)
    return ChannelSecurity.for_client(
        False,
        env.get("TLS_CA_FILE", "").strip(),
        env.get("TLS_CERT_FILE", "").strip(),
        env.get("TLS_KEY_FILE", "").strip(),
    )


def is_ready(child: Child) -> bool:
    try:
        if child.ready == "redis":
            with redis.Redis(port=child.port, socket_connect_timeout=0.5, socket_timeout=0.5) as client:
                return bool(client.ping())
        if child.ready == "http":
            url = f"http://localhost:{child.port}/_stcore/health"
            with urllib.request.urlopen(url, timeout=1) as reply:
                return bool(reply.status == 200)
        with channel(f"localhost:{child.port}", grpc_security()) as ch:
            request = health_pb2.HealthCheckRequest(service="")
            response = health_pb2_grpc.HealthStub(ch).Check(request, timeout=1)
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
    except (OSError, redis.RedisError, grpc.RpcError):
        return False


def wait_ready(child: Child, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not _stop.is_set() and not is_ready(child):
        if child.proc.poll() is not None:
            fail(f"{child.name} exited with status {child.proc.returncode} while starting")
        if time.monotonic() > deadline:
            fail(f"{child.name} not ready after {timeout:.0f}s")
        _stop.wait(0.2)


def start_redis(port: int) -> Child:
    binary = shutil.which("redis-server")
    if binary is None:
        fail("redis-server not found: `make deps` installs it when run as root; or apt-get install "
             "redis-server; or set REDIS_URL to use a Redis of yours")  # fmt: skip
    data = ROOT / ".data" / "redis"
    data.mkdir(parents=True, exist_ok=True)
    _data_lock.append((data / ".lock").open("w"))
    try:
        fcntl.flock(_data_lock[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"{data} is in use by another run_local")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--logfile", "",
            "--hash-max-listpack-value", "512"]  # fmt: skip
    child = spawn("redis", argv, port, "redis", {})
    wait_ready(child, timeout=30)
    return child


def stop(children: list[Child], timeout: float) -> None:
    for child in children:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say("run_local", f"{child.name} did not stop within {timeout:.0f}s: killing it")
            child.proc.kill()
            child.proc.wait()
        child.pump.join(2)  # print the last lines it wrote


Planned = list[tuple[str, Service, int]]  # name, service, port of every replica


def plan() -> Planned:
    """Every replica of every service whose code exists; replica i on the base port + 10*i."""
    planned: Planned = []
    for svc in services():
        count = env_int(svc.replicas_env, 1) if svc.replicas_env else 1
        if (ROOT / svc.requires).exists():
            planned += [(svc.name if count == 1 else f"{svc.name}-{i + 1}", svc, svc.port + 10 * i)
                        for i in range(count)]  # fmt: skip
    return planned


def metrics_ports(planned: Planned) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Each gRPC service's METRICS_PORT (none without METRICS_PORT), and every port they take."""
    metrics: dict[str, int] = {}
    ports: list[tuple[str, int]] = []
    next_port = env_int("METRICS_PORT", 0)
    if not next_port:
        return metrics, ports
    # The api's server process i serves metrics on its METRICS_PORT + i (API_PROCESSES).
    api_ports = process_count(env_int("API_PROCESSES", 1))
    for n, svc, _ in planned:
        if svc.ready == "grpc":
            count = api_ports if svc.name == "api" else 1
            metrics[n] = next_port
            ports += [(f"{n} metrics", next_port + i) for i in range(count)]
            next_port += count
    return metrics, ports


def wiring(planned: Planned) -> dict[str, str]:
    """Schedulers push to every executor replica; executors report back to any scheduler replica
    (gRPC's ipv4: target lists several addresses, spread by round_robin)."""
    executors = [f"127.0.0.1:{p}" for _, svc, p in planned if svc.name == "executor"]
    schedulers = [f"127.0.0.1:{p}" for _, svc, p in planned if svc.name == "scheduler"]
    out = {}
    if executors:
        out["EXECUTOR_ADDRS"] = ",".join(executors)
    if schedulers:
        out["SCHEDULER_ADDR"] = "ipv4:" + ",".join(schedulers)
    return out


def service_env(svc: Service, port: int, metrics_port: int, base: dict[str, str]) -> dict[str, str]:
    env = {**base, **grpc_env(), **svc.env}
    if svc.name == "api":  # authentication stays on; the development token is its first admin
        env.update(AUTH_MODE="token", AUTH_BOOTSTRAP_TOKEN=dev_token())
    if svc.name in ("api", "scheduler", "executor") and not os.environ.get("SECRET_KEYS"):
        env["SECRET_KEYS"] = dev_secret_keys()
    if svc.name == "executor":
        env.update(command_user_env())
    if svc.ready == "grpc":
        env["GRPC_PORT"] = str(port)
        env["METRICS_PORT"] = str(metrics_port)
    return env


def announce(children: list[Child], redis_url: str, metrics: dict[str, int]) -> None:
    say("run_local", "the suite is up:")
    for child in children:
        url = f"http://localhost:{child.port}" if child.ready == "http" else f"localhost:{child.port}"
        label = "dashboard" if child.name == "ui" else child.name
        say("run_local", f"  {label + ':':<12} {redis_url if child.ready == 'redis' else url}")
        if child.name in metrics:
            say("run_local", f"  {'':<12} http://localhost:{metrics[child.name]}/metrics")
    shown = DEV_TOKEN_FILE.relative_to(ROOT)
    say("run_local", f"  {'admin token:':<12} {dev_token()}")
    say("run_local", f"  {'':<12} (kept in {shown}) paste it into the dashboard, or for schedctl:")
    plaintext = " SCHEDCTL_PLAINTEXT=true" if grpc_security().plaintext else ""
    say("run_local", f"  {'':<12} export SCHEDCTL_TOKEN=$(cat {shown}){plaintext}")
    say("run_local", f"Press Ctrl-C (or kill -TERM {os.getpid()}) to stop everything.")


def watch(children: list[Child]) -> int:
    """Until told to stop (0), or until a child exits on its own (1)."""
    while not _stop.wait(0.2):
        for child in children:
            if child.proc.poll() is not None:
                say("run_local", f"{child.name} exited unexpectedly (status {child.proc.returncode})")
                return 1
    return 0


def run(redis_url: str, children: list[Child]) -> int:
    """Start everything into `children` (the caller stops them), then watch until told to stop."""
    redis_port = 0 if redis_url else env_int("LOCAL_REDIS_PORT", 6390)
    planned = plan()
    metrics, ports = metrics_ports(planned)
    ports = ([("redis", redis_port)] if redis_port else []) + ports
    for name, port in [*ports, *((n, p) for n, _, p in planned)]:
        if not port_free(port):
            fail(
                f"port {port} ({name}) is busy: already running? "
                "(see LOCAL_REDIS_PORT, API_PORT, METRICS_PORT)"
            )
    if redis_port:
        children.append(start_redis(redis_port))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
    base = {"REDIS_URL": redis_url, **wiring(planned)}
    for name, svc, port in planned:
        if not _stop.is_set():
            env = service_env(svc, port, metrics.get(name, 0), base)
            children.append(spawn(name, [sys.executable, *svc.args], port, svc.ready, env))
    for child in children:
        wait_ready(child)
    if not _stop.is_set():
        announce(children, redis_url, metrics)
    return watch(children)


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: _stop.set())
    try:  # the services reject a bad value themselves
        grace = float(os.environ.get("SHUTDOWN_GRACE_SECONDS") or 10)
    except ValueError:
        grace = 10.0
    children: list[Child] = []
    try:
        status = run(os.environ.get("REDIS_URL", ""), children)
    except SystemExit as exc:
        status = int(exc.code or 0)
    say("run_local", "stopping: services first, then Redis")
    stop([c for c in children if c.ready != "redis"], grace + 5)
    stop([c for c in children if c.ready == "redis"], 60)
    say("run_local", "stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
