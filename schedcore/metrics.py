"""Prometheus metrics of every service: their definitions, and the HTTP server that exposes them.

Each is defined with the services that export it (`_owned`), and a service's /metrics serves a
registry of only those (registry_for), plus the client library's process_* and python_*. Names
share the `tasksched_` prefix and carry their unit; docs/metrics.md lists each with its labels and
meaning. The server starts only when METRICS_PORT is set (schedcore.server.GrpcService).

Costs: the engine handles thousands of executions a second, so the scheduler counts once per
batch (`.inc(n)`); only the lag histogram and the executor's counters are touched per execution,
where the code already does per-execution work.
"""

from __future__ import annotations

import importlib.metadata
import platform
import threading
from typing import TypeVar
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.registry import Collector

# No `<name>_created` series beside every counter: they double what a scrape carries for nothing.
prometheus_client.disable_created_metrics()

# The distribution whose installed metadata gives tasksched_build_info its version.
DISTRIBUTION = "scheduler-suite"


def project_version() -> str:
    """The installed project's version (pyproject.toml's, through its metadata), or "unknown"
    when the code runs without it being installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# Which services export each family: a process's /metrics carries only its own (and the client
# library's process_* and python_*), so a dashboard's sum over a family counts no idle copies.
API, SCHEDULER, EXECUTOR = frozenset({"api"}), frozenset({"scheduler"}), frozenset({"executor"})
ALL = API | SCHEDULER | EXECUTOR
_OWNERS: list[tuple[frozenset[str], Collector]] = []
M = TypeVar("M", bound=Collector)


def _owned(services: frozenset[str], metric: M) -> M:
    _OWNERS.append((services, metric))
    return metric


def registry_for(service: str) -> CollectorRegistry:
    """A registry of `service`'s families, with the process, platform and garbage collector ones."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    for services, metric in _OWNERS:
        if service in services:
            registry.register(metric)
    return registry


# --- every service ----------------------------------------------------------------------------

BUILD_INFO = _owned(
    ALL,
    Gauge(
        "tasksched_build_info",
        "Always 1: the version of the suite and of Python this process runs, as labels.",
        ["version", "python"],
    ),
)
BUILD_INFO.labels(project_version(), platform.python_version()).set(1)

# --- scheduler --------------------------------------------------------------------------------

OCCURRENCES_FIRED = _owned(
    SCHEDULER,
    Counter(
        "tasksched_occurrences_fired_total",
        "Occurrences fired: executions created by the scheduler to run (PENDING).",
    ),
)
OCCURRENCES_SKIPPED = _owned(
    SCHEDULER,
    Counter(
        "tasksched_occurrences_skipped_total",
        "Occurrences recorded SKIPPED under the missed-time policy.",
    ),
)
EXECUTIONS_FINISHED = _owned(
    SCHEDULER,
    Counter(
        "tasksched_executions_finished_total",
        "Executions that reached a final status, by status.",
        ["status"],
    ),
)
EXECUTION_RETRIES = _owned(
    SCHEDULER,
    Counter(
        "tasksched_execution_retries_total",
        "Failed or timed-out attempts scheduled to run again under the task's retry policy.",
    ),
)
EXECUTION_LAG = _owned(
    SCHEDULER,
    Histogram(
        "tasksched_execution_lag_seconds",
        "Start of an execution's first attempt minus its nominal time.",
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
    ),
)
LEASES_TAKEN = _owned(
    SCHEDULER,
    Counter(
        "tasksched_leases_taken_total",
        "Dispatch leases taken, by path: ready (a dispatch round) or fire (a run leased as it fired).",
        ["path"],
    ),
)
TASKS_PAUSED_BY_FAILURES = _owned(
    SCHEDULER,
    Counter(
        "tasksched_tasks_paused_by_failures_total",
        "Tasks that paused themselves after pause_after_failures failed executions in a row.",
    ),
)
LEASES_RECLAIMED = _owned(
    SCHEDULER,
    Counter(
        "tasksched_leases_reclaimed_total",
        "Expired dispatch leases taken back, by outcome (requeued; failed after too many losses; "
        "cancelled, being cancelled when the lease ran out).",
        ["outcome"],
    ),
)
DISPATCH_BATCH = _owned(
    SCHEDULER,
    Histogram(
        "tasksched_dispatch_batch_executions",
        "Executions in one batch pushed to one executor.",
        buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
    ),
)
REDIS_ERRORS = _owned(
    API | SCHEDULER,
    Counter(
        "tasksched_redis_errors_total",
        "Redis connection failures and timeouts, by the operation that met them.",
        ["operation"],
    ),
)

# Backlog, per partition, read from Redis every few seconds by the one replica reporting that
# partition (services/scheduler/backlog.py): `sum` over replicas counts each partition once.
EXECUTIONS_READY = _owned(
    SCHEDULER,
    Gauge(
        "tasksched_executions_ready",
        "Executions queued for dispatch in the partition (retries waiting out their backoff too).",
        ["partition"],
    ),
)
EXECUTIONS_IN_FLIGHT = _owned(
    SCHEDULER,
    Gauge(
        "tasksched_executions_in_flight",
        "Executions handed to an executor under a dispatch lease in the partition.",
        ["partition"],
    ),
)
EXECUTIONS_WAITING_COMMAND = _owned(
    SCHEDULER,
    Gauge(
        "tasksched_executions_waiting_command",
        "Executions of command tasks in the partition waiting for a command-capable executor.",
        ["partition"],
    ),
)

# Per-task series, for tasks with export_metrics, at most TASK_METRICS_MAX tasks per replica
# (services/scheduler/taskmetrics.py): label `task` is the task id; TASK_INFO names it.
TASK_INFO = _owned(
    SCHEDULER,
    Gauge(
        "tasksched_task_info",
        "1 for each task whose own series this replica exports, with its name and namespace.",
        ["task", "name", "namespace"],
    ),
)
TASK_LAG = _owned(
    SCHEDULER,
    Histogram(
        "tasksched_task_execution_lag_seconds",
        "Start of an execution's first attempt minus its nominal time, per task that exports metrics.",
        ["task"],
        buckets=(0.01, 0.05, 0.25, 1.0, 5.0, 30.0, 300.0),
    ),
)
TASK_FINISHED = _owned(
    SCHEDULER,
    Counter(
        "tasksched_task_executions_finished_total",
        "Executions that reached a final status, per task that exports metrics and status.",
        ["task", "status"],
    ),
)
TASK_METRICS_DROPPED = _owned(
    SCHEDULER,
    Counter(
        "tasksched_task_metrics_dropped_total",
        "Results of tasks with export_metrics not exported: TASK_METRICS_MAX tasks were exported already.",
    ),
)

# --- alerts (scheduler) -----------------------------------------------------------------------

NOTIFICATION_ATTEMPTS = _owned(
    SCHEDULER,
    Counter(
        "tasksched_notification_attempts_total",
        "Notification delivery attempts, by channel kind and outcome (delivered, retried, failed).",
        ["channel", "outcome"],
    ),
)
ALERTS_SWEPT = _owned(
    SCHEDULER,
    Counter(
        "tasksched_alerts_raised_by_sweep_total",
        "LATE and RUNNING_LONG alerts raised by the alert sweep.",
    ),
)

# --- executor ---------------------------------------------------------------------------------

ATTEMPTS = _owned(
    EXECUTOR,
    Counter(
        "tasksched_executor_attempts_total",
        "Attempts an executor ran, by target kind and result status.",
        ["target", "status"],
    ),
)
ATTEMPTS_IN_FLIGHT = _owned(
    EXECUTOR,
    Gauge(
        "tasksched_executor_attempts_in_flight",
        "Attempts running on this executor now.",
    ),
)
EXECUTOR_CONCURRENCY = _owned(
    EXECUTOR,
    Gauge(
        "tasksched_executor_concurrency",
        "Attempts this executor runs at most at once (EXECUTOR_CONCURRENCY).",
    ),
)
ATTEMPTS_QUEUED = _owned(
    EXECUTOR,
    Gauge(
        "tasksched_executor_attempts_queued",
        "Items accepted by this executor and waiting for a free slot (EXECUTOR_PREFETCH).",
    ),
)

# --- every gRPC server ------------------------------------------------------------------------

RPCS = _owned(
    ALL,
    Counter(
        "tasksched_rpc_handled_total",
        "Unary RPCs served, by full method name and gRPC status code.",
        ["method", "code"],
    ),
)
RPC_DURATION = _owned(
    ALL,
    Histogram(
        "tasksched_rpc_duration_seconds",
        "Time to serve a unary RPC, by full method name.",
        ["method"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    ),
)


def status_label(status_name: str) -> str:
    """`EXECUTION_STATUS_TIMED_OUT` -> `timed_out`."""
    return status_name.removeprefix("EXECUTION_STATUS_").lower()


class MetricsServer:
    """The /metrics HTTP endpoint, served by prometheus_client on a daemon thread."""

    def __init__(self, host: str, port: int, service: str = "") -> None:
        """`service`: serve only its families (registry_for); "": every family defined."""
        self.registry = registry_for(service) if service else prometheus_client.REGISTRY
        self.host = host
        self.requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> int:
        try:
            self._server, self._thread = prometheus_client.start_http_server(
                self.requested_port, addr=self.host, registry=self.registry
            )
        except OSError as exc:
            raise OSError(
                f"cannot serve metrics on {self.host}:{self.requested_port} (METRICS_PORT): {exc}"
            ) from None
        self.port = int(self._server.server_address[1])
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
