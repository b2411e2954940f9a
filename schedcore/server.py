"""Server bootstrap shared by every service: gRPC aio server, health, reflection, the interceptor,
JSON logs, settings, and graceful shutdown on SIGTERM/SIGINT.

Shutdown order (Kubernetes-friendly): health flips to NOT_SERVING at once so load balancers stop
sending new calls, the server stops accepting calls, in-flight calls get `shutdown_grace_s` to
finish, then the service's own resources close. Keep SHUTDOWN_GRACE_SECONDS below the pod's
terminationGracePeriodSeconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from schedcore import logs, tracing
from schedcore.errors import StoreUnavailable
from schedcore.interceptors import Authenticate, ServiceInterceptor
from schedcore.metrics import REDIS_ERRORS, MetricsServer
from schedcore.reflection import enable_reflection
from schedcore.settings import GRPC_MAX_MESSAGE_BYTES, Settings, SettingsError
from schedcore.supervisor import die_with_parent, process_count, supervise
from schedcore.tls import ServerCertificates, server_certificates

log = logging.getLogger("schedcore.server")

Register = Callable[[grpc.aio.Server], Sequence[str]]
ReadyCheck = Callable[[], Awaitable[bool]]
Closer = Callable[[], Awaitable[None]]
Drainer = Callable[[float], Awaitable[None]]
# Grace the server still gets after a service's own drain (its streams have ended by then).
DRAINED_STOP_S = 1.0
# Health service name for liveness probes: SERVING from start until SIGTERM, whatever Redis does,
# so a Redis outage makes replicas unready (readiness: the empty name) but never restarts them.
LIVENESS_SERVICE = "liveness"


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait until it has ended.

    One cancel() is not always enough on Python 3.11: asyncio.wait_for (used inside redis-py)
    can swallow a cancellation that arrives as the awaited call completes, and the task goes on.
    So cancel again until it is done; loops also check a stop flag of their own.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


class GrpcService:
    """One gRPC server with health and reflection, started and stopped as a unit.

    `register` adds the service's servicers and returns their full service names; `ready` says
    whether the service can do its work (for the api: Redis answers); `on_start` starts the
    service's background work once the server is up; `drain(grace)` (optional) lets the service
    finish its own work after health turns NOT_SERVING and before the server stops; `close` stops
    the background work and releases the service's resources after the server has stopped;
    `authenticate` (optional) is the interceptor's authentication hook (schedcore/interceptors.py);
    `interceptors` run after that one, closer to the servicers (the executor's client identity
    check, schedcore/identity.py);
    `max_concurrent_rpcs` (0: none) bounds the unary calls it runs at once, health exempt;
    `reuse_port` lets several processes bind its ports (SO_REUSEPORT, schedcore/supervisor.py).
    gRPC turns SO_REUSEPORT on by default on Linux; off here, a second process on a taken port
    fails to start instead of silently sharing it.
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        register: Register,
        ready: ReadyCheck,
        close: Closer | None = None,
        *,
        on_start: Closer | None = None,
        drain: Drainer | None = None,
        limit_connection_age: bool = True,
        authenticate: Authenticate | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        max_concurrent_rpcs: int = 0,
        reuse_port: bool = False,
    ) -> None:
        self.name = name
        self.settings = settings
        self._ready = ready
        self._close = close
        self._on_start = on_start
        self._drain = drain
        port_options = [("grpc.so_reuseport", int(reuse_port))]
        options: list[tuple[str, int]] = [
            *port_options,
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
        ]
        if limit_connection_age:
            # Clients re-resolve and spread over new replicas (Kubernetes scale-out).
            options += [
                ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", 30 * 1000),
            ]
        interceptor = ServiceInterceptor(authenticate, max_concurrent_rpcs)
        self.server = grpc.aio.server(interceptors=[interceptor, *interceptors], options=options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(register(self.server))
        enable_reflection(self.server, [*self.service_names, health.SERVICE_NAME])
        # A certificate that cannot be used stops the service here, before it binds anything.
        self.certificates: ServerCertificates | None = server_certificates(settings)
        # HEALTH_PORT: the health service alone, plaintext, for Kubernetes' grpc probes.
        self.health_server: grpc.aio.Server | None = None
        if settings.health_port:
            self.health_server = grpc.aio.server(options=port_options)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
        self.port = 0
        self.health_port = 0
        self._not_ready_reason = ""
        self.metrics: MetricsServer | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        # Set when the ready check finds a setting the store refuses: the process exits with it.
        self.fatal: SettingsError | None = None
        self._refused = asyncio.Event()

    async def start(self) -> int:
        """Bind, start serving and begin probing readiness. Returns the bound port.

        With METRICS_PORT set, /metrics is served first, so a port clash stops the service
        before it takes any work."""
        if self.settings.metrics_port:
            metrics = MetricsServer(self.settings.grpc_host, self.settings.metrics_port, self.name)
            metrics.start()
            self.metrics = metrics
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        try:
            if self.certificates is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, self.certificates.credentials())
            if self.health_server is not None:
                health_address = f"{self.settings.grpc_host}:{self.settings.health_port}"
                address = f"{health_address} (HEALTH_PORT)"
                self.health_port = self.health_server.add_insecure_port(health_address)
        except RuntimeError as exc:  # grpcio raises when the address cannot be bound
            await self._stop_metrics()
            raise OSError(f"cannot listen on {address} (GRPC_HOST / GRPC_PORT): {exc}") from None
        await self._set_health(await self._check())
        if self.fatal is not None:  # refused before serving a call or starting any loop
            await self._stop_metrics()
            raise self.fatal
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        self._health_task = asyncio.create_task(self._health_loop(), name="health")
        if self._on_start is not None:
            await self._on_start()
        log.info(
            "%s listening",
            self.name,
            extra={
                "port": self.port,
                "tls": self._tls_mode(),
                **({"health_port": self.health_port} if self.health_server is not None else {}),
            },
        )
        return self.port

    def _tls_mode(self) -> str:
        if self.certificates is None:
            return "off"
        return "mtls" if self.certificates.client_ca_file else "on"

    async def _check(self) -> bool:
        try:
            async with asyncio.timeout(self.settings.health_interval_s * 2):
                ok = await self._ready()
        except SettingsError as exc:  # what Redis holds refuses a setting (PARTITIONS): stop
            self._not_ready_reason = str(exc)
            self.fatal = exc
            self._refused.set()
            return False
        except Exception as exc:  # noqa: BLE001 - any failure of the probe means not ready
            if isinstance(exc, (TimeoutError, StoreUnavailable)):
                REDIS_ERRORS.labels("health").inc()
            # Why, for the log line when health changes (e.g. Redis refused the credentials).
            # redis-py's messages name the host and port, never the password.
            if isinstance(exc, StoreUnavailable):
                self._not_ready_reason = exc.reason
            else:
                self._not_ready_reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return False
        self._not_ready_reason = ""
        return ok

    async def _set_health(self, ok: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", *self.service_names):
            await self.health.set(service, status)

    async def _health_loop(self) -> None:
        last: tuple[bool, str] | None = None
        while not self._stopped.is_set():
            ok = await self._check()
            reason = self._not_ready_reason
            if (ok, reason) != last:
                if ok:
                    log.info("health SERVING")
                elif reason:
                    log.warning("health NOT_SERVING: %s", reason)
                else:
                    log.info("health NOT_SERVING")
                last = (ok, reason)
            await self._set_health(ok)
            await asyncio.sleep(self.settings.health_interval_s)

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop: NOT_SERVING, refuse new calls, let in-flight ones finish, close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.shutdown_grace_s if grace is None else grace
        log.info("%s shutting down", self.name, extra={"grace_s": grace})
        if self._health_task is not None:
            await cancel_and_wait(self._health_task)
        await self.health.enter_graceful_shutdown()
        if self._drain is not None:
            await self._drain(grace)  # the service finishes its own work within the grace
            grace = min(grace, DRAINED_STOP_S)
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self._close is not None:
            await self._close()
        await self._stop_metrics()
        log.info("%s stopped", self.name)

    async def _stop_metrics(self) -> None:
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)  # shutdown() waits for the serving thread
            self.metrics = None

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        signalled = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        await self.start()
        waits = [asyncio.create_task(signalled.wait()), asyncio.create_task(self._refused.wait())]
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await self.stop()
        if self.fatal is not None:
            raise self.fatal


def run_main(
    name: str,
    build: Callable[[Settings], Awaitable[GrpcService]],
    *,
    default_port: int,
    processes: Callable[[Settings], int] | None = None,
) -> None:
    """Entry point of a service process: settings, logs, serve until signalled.

    `name` is the service (api, scheduler, executor): it reads only its own variables
    (schedcore/settings.py), and a bad one exits with status 2 and a message naming it.
    `processes` (the api's API_PROCESSES) says how many server processes share the port: past
    one, this process only supervises them (schedcore/supervisor.py).
    """
    try:
        settings = Settings.from_env(default_port=default_port, service=name)
    except SettingsError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    count = process_count(processes(settings)) if processes is not None else 1
    if count == 1:
        logs.configure(name, settings.log_level)
        sys.exit(serve(name, build, settings))
    problem = ""
    if not settings.grpc_port:
        problem = "GRPC_PORT: must be set (not 0) when several server processes share it"
    elif settings.metrics_port and settings.metrics_port + count - 1 > 65535:
        problem = f"METRICS_PORT: {settings.metrics_port} + {count} processes passes 65535"
    if problem:
        print(f"{name}: configuration error: {problem}", file=sys.stderr)
        sys.exit(2)
    logs.configure(name, settings.log_level)
    sys.exit(supervise(name, count, functools.partial(_serve_child, name, build, settings)))


def _serve_child(
    name: str,
    build: Callable[[Settings], Awaitable[GrpcService]],
    settings: Settings,
    index: int,
    parent_pid: int,
) -> None:
    """One of several server processes: its own instance id and metrics port (METRICS_PORT +
    index), its index in every log line."""
    die_with_parent(parent_pid)
    own = dataclasses.replace(
        settings,
        instance_id=f"{settings.instance_id}-{index}",
        metrics_port=settings.metrics_port + index if settings.metrics_port else 0,
    )
    logs.configure(name, settings.log_level, process_index=index)
    sys.exit(serve(name, build, own))


def serve(name: str, build: Callable[[Settings], Awaitable[GrpcService]], settings: Settings) -> int:
    """Build the service and serve until signalled; the process's exit status (2: a setting or
    an address it cannot use)."""

    async def main() -> None:
        service = await build(settings)
        await service.run_until_signal()

    tracing.configure(name, settings)  # in this process: the exporter's thread does not fork
    try:
        asyncio.run(main())
    except SettingsError as exc:  # e.g. a certificate file that cannot be used
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    finally:
        tracing.shutdown()  # what the batch processor holds is exported before the exit
    return 0
