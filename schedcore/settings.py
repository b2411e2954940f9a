"""Settings: one frozen object per process, parsed once from the environment at start-up.

The fields of Settings are the settings table: each is declared by `var(VARIABLE, default,
parser, readers)`, so a variable's name, default, parser and the services that read it are
written once, here. `Settings.from_env(service=...)` parses only the variables that service
reads (the others keep their defaults): a service does not refuse to start on a setting it never
uses. A bad value stops the service with a message that names the variable (SettingsError).
docs/configuration.md lists every variable with its default and readers;
tests/unit/test_settings.py checks it against this table, and checks that no service's code
reads a field it does not parse.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from schedcore import envparse as p
from schedcore.envparse import (
    ANY_CLIENT,
    AUTH_MODES,
    DEFAULT_ALLOWED_CLIENTS,
    DEFAULT_LIST_PAGE_BYTES,
    GRPC_MAX_MESSAGE_BYTES,
    LIST_PAGE_BYTES_RANGE,
    MAX_BEARER,
    MAX_BYTES_QUOTA,
    MAX_QUOTA,
    MIN_BOOTSTRAP_TOKEN,
    NAMESPACE,
    TLS_FILE_VARIABLES,
    SettingsError,
    check_tls,
    parse_bool,
)
from schedcore.netpolicy import DEFAULT_DENY

# Re-exported: the rest of the tree imports these from schedcore.settings.
__all__ = [
    "ANY_CLIENT",
    "AUTH_MODES",
    "DEFAULT_ALLOWED_CLIENTS",
    "DEFAULT_LIST_PAGE_BYTES",
    "GRPC_MAX_MESSAGE_BYTES",
    "LIST_PAGE_BYTES_RANGE",
    "MAX_BEARER",
    "MAX_BYTES_QUOTA",
    "MAX_QUOTA",
    "MIN_BOOTSTRAP_TOKEN",
    "NAMESPACE",
    "SERVICES",
    "TLS_FILE_VARIABLES",
    "NamespaceQuota",
    "Settings",
    "SettingsError",
    "check_tls",
    "parse_bool",
    "variables",
]

# The services, and the sets of them that read a variable.
SERVICES = ("api", "scheduler", "executor")
ALL = frozenset(SERVICES)
API = frozenset({"api"})
SCHEDULER = frozenset({"scheduler"})
EXECUTOR = frozenset({"executor"})
REDIS = frozenset({"api", "scheduler"})  # the executor never connects to Redis
TARGETS = frozenset({"api", "executor"})  # where targets are checked (api) and run (executor)
LEASES = frozenset({"scheduler", "executor"})
# Where outbound calls are made: http targets (executor), alert deliveries (scheduler), and
# where they are checked (api).
EGRESS = ALL
ALERTS = frozenset({"api", "scheduler"})  # the scheduler delivers; the api's TestChannel too


@dataclass(frozen=True)
class NamespaceQuota:
    """One namespace's limits on what its tasks hold in Redis (0: no limit)."""

    max_tasks: int
    max_task_bytes: int
    max_runs_per_minute: int = 0


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Var:
    """One row of the settings table: the variable behind a field of Settings."""

    name: str
    parse: p.Parser
    readers: frozenset[str]


def var(
    name: str,
    default: Any,
    parse: p.Parser = p.text,
    readers: frozenset[str] = ALL,
    *,
    secret: bool = False,
    factory: Any = None,
) -> Any:
    """A field of Settings read from the variable `name` by `parse`, by the services `readers`.
    A `secret` never shows in repr (logs). `factory`: the default is computed per process."""
    meta = {"var": Var(name, parse, readers)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, repr=not secret, metadata=meta)
    return dataclasses.field(default=default, repr=not secret, metadata=meta)


def variables() -> list[tuple[dataclasses.Field[Any], Var]]:
    """The settings table: every field of Settings with its variable."""
    return [(f, f.metadata["var"]) for f in dataclasses.fields(Settings)]


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _check_cluster(settings: Settings) -> None:
    """REDIS_CLUSTER_NODES excludes Sentinel, a unix socket and a database other than 0."""
    if not settings.redis_cluster_nodes:
        return
    if settings.redis_sentinels:
        raise SettingsError(
            "REDIS_CLUSTER_NODES: set either REDIS_CLUSTER_NODES (Redis Cluster) or REDIS_SENTINELS "
            "(Sentinel), not both"
        )
    url = urlparse(settings.redis_url)
    if url.scheme == "unix":
        raise SettingsError("REDIS_CLUSTER_NODES: REDIS_URL must be redis:// or rediss:// with Redis Cluster")
    if url.path.strip("/") not in ("", "0"):
        raise SettingsError(
            f"REDIS_CLUSTER_NODES: Redis Cluster has only database 0, REDIS_URL names {url.path.strip('/')!r}"
        )


@dataclass(frozen=True)
class Settings:
    """What the services read from their environment. Defaults are for local development,
    except the secure ones: TLS is on (grpc_plaintext=False) and needs a certificate."""

    # Where Redis is. Only the api and the scheduler use it; the executor never connects.
    redis_url: str = var("REDIS_URL", "redis://localhost:6379/0", p.redis_url, REDIS)
    # Redis Sentinel: when set, these are asked where the master named redis_sentinel_master is,
    # and REDIS_URL gives only the credentials, database and TLS to use with it.
    redis_sentinels: tuple[tuple[str, int], ...] = var("REDIS_SENTINELS", (), p.sentinels, REDIS)
    redis_sentinel_master: str = var("REDIS_SENTINEL_MASTER", "mymaster", p.text, REDIS)
    redis_sentinel_password: str = var("REDIS_SENTINEL_PASSWORD", "", p.text, REDIS)
    # Redis Cluster: when set, these seed nodes are asked for the cluster's layout and every
    # partition's keys are read on the node serving its slot (docs/partitions.md, "Cluster
    # mode"); REDIS_URL gives only the credentials and TLS. Not with REDIS_SENTINELS.
    redis_cluster_nodes: tuple[tuple[str, int], ...] = var("REDIS_CLUSTER_NODES", (), p.sentinels, REDIS)
    # Prefix of every Redis key, so one Redis can hold several independent deployments.
    redis_key_prefix: str = var("REDIS_KEY_PREFIX", "ts", p.text, REDIS)
    # How many partitions tasks spread over (docs/partitions.md): fixed for a deployment; every
    # api and scheduler replica must use the same (they refuse to start otherwise). At most
    # schedcore.store.keys.MAX_PARTITIONS.
    partitions: int = var("PARTITIONS", 1, p.number(1, 256), REDIS)
    # Seconds a Redis command may take before the call fails with UNAVAILABLE.
    redis_timeout_s: float = var("REDIS_TIMEOUT_SECONDS", 5.0, p.number(0.05, 300.0), REDIS)
    # Api: replicas that must acknowledge each write a client gets acknowledged (WAIT n, for up
    # to half of REDIS_TIMEOUT_SECONDS); fewer: UNAVAILABLE, the write may stand. 0: no wait
    # (docs/partitions.md, "Acknowledged writes").
    redis_wait_replicas: int = var("REDIS_WAIT_REPLICAS", 0, p.number(0, 16), API)
    # Address and port the gRPC server listens on (the port's default is the service's own:
    # from_env's default_port).
    grpc_host: str = var("GRPC_HOST", "0.0.0.0")
    grpc_port: int = var("GRPC_PORT", 50051, p.number(0, 65535))
    # gRPC without TLS, server and client side. The default is TLS: a service without a certificate
    # refuses to start unless this is set (docs/security.md).
    grpc_plaintext: bool = var("GRPC_PLAINTEXT", False, p.parse_bool)
    # PEM files: the certificate this service presents (as a server, and as a client for mTLS),
    # its key, the CA that signs the servers it connects to ("": gRPC's default roots), and the
    # CA that signs client certificates (set: clients must present one, i.e. mTLS).
    tls_cert_file: str = var("TLS_CERT_FILE", "")
    tls_key_file: str = var("TLS_KEY_FILE", "")
    tls_ca_file: str = var("TLS_CA_FILE", "")
    tls_client_ca_file: str = var("TLS_CLIENT_CA_FILE", "")
    # A second, plaintext port serving only the health service, for Kubernetes' grpc probes
    # (they cannot do TLS with a client certificate). 0: none.
    health_port: int = var("HEALTH_PORT", 0, p.number(0, 65535))
    # Seconds in-flight calls get to finish after SIGTERM.
    shutdown_grace_s: float = var("SHUTDOWN_GRACE_SECONDS", 10.0, p.number(0.0, 3600.0))
    # Servers (not the executor) end each client connection after this long, so clients re-resolve.
    max_connection_age_s: float = var("MAX_CONNECTION_AGE_SECONDS", 300.0, p.number(1.0, 86_400.0))
    # Seconds between health probes (of Redis, where the service uses it).
    health_interval_s: float = var("HEALTH_INTERVAL_SECONDS", 1.0, p.number(0.05, 60.0))
    log_level: str = var("LOG_LEVEL", "INFO", p.choice("DEBUG", "INFO", "WARNING", "ERROR"))
    # Port of the Prometheus /metrics HTTP endpoint (on GRPC_HOST). 0: no metrics server.
    metrics_port: int = var("METRICS_PORT", 0, p.number(0, 65535))
    # OpenTelemetry traces go to this OTLP/gRPC endpoint (http:// plaintext, https:// TLS); empty:
    # tracing off (docs/tracing.md). The ratio of executions and calls traced, 0-1.
    otel_endpoint: str = var("OTEL_EXPORTER_OTLP_ENDPOINT", "", p.web_url)
    otel_sample_ratio: float = var("OTEL_TRACES_SAMPLER_ARG", 1.0, p.number(0.0, 1.0))
    # Api: upper bound of a task's serialized payload (and of an http body).
    max_payload_bytes: int = var("MAX_PAYLOAD_BYTES", 256 * 1024, p.number(1024, 3 * 1024 * 1024), API)
    # Execution history retention: newest N per task (api and scheduler), and nothing older than
    # this (the api's sweep).
    history_max_per_task: int = var("HISTORY_MAX_PER_TASK", 1000, p.number(1, 10_000_000), REDIS)
    history_max_age_s: int = var(
        "HISTORY_MAX_AGE_SECONDS", 7 * 24 * 3600, p.number(60, 10 * 365 * 24 * 3600), API
    )
    # Api: seconds a CreateTask request_id is remembered.
    request_id_ttl_s: int = var("REQUEST_ID_TTL_SECONDS", 24 * 3600, p.number(60, 30 * 24 * 3600), API)
    # Api: seconds a ListTasks / ListExecutions page token stays valid.
    page_token_ttl_s: int = var("PAGE_TOKEN_TTL_SECONDS", 24 * 3600, p.number(60, 30 * 24 * 3600), API)
    # Api: secret that signs page tokens. Empty: a random one is created once and shared through Redis.
    page_token_secret: str = var("PAGE_TOKEN_SECRET", "", p.text, API)
    # Api: a List response stops before it would pass this many bytes serialized (it then carries
    # a next_page_token), whatever its page_size; a single item larger than this is sent alone.
    list_page_max_bytes: int = var(
        "LIST_PAGE_MAX_BYTES", DEFAULT_LIST_PAGE_BYTES, p.number(*LIST_PAGE_BYTES_RANGE), API
    )
    # Name of this replica in logs and execution records. Default: <hostname>-<pid>.
    instance_id: str = var("INSTANCE_ID", None, factory=_default_instance_id)
    # Executor: attempts one replica runs at once.
    executor_concurrency: int = var("EXECUTOR_CONCURRENCY", 100, p.number(1, 100_000), EXECUTOR)
    # Executor: at most this many items accepted beyond the running ones, queued until a slot
    # frees (leases renewed like running ones); fewer when attempts finish slowly (engine.py).
    executor_prefetch: int = var("EXECUTOR_PREFETCH", 100, p.number(0, 100_000), EXECUTOR)
    # Executor: bound of an execution's stored output (log record, http response excerpt).
    output_limit_bytes: int = var("OUTPUT_LIMIT_BYTES", 8192, p.number(256, 1024 * 1024), EXECUTOR)
    # Executor: where to report results when the stream to the dispatching scheduler is gone.
    scheduler_addr: str = var("SCHEDULER_ADDR", "localhost:50052", p.text, EXECUTOR)
    # Scheduler: the executors, as a gRPC target: "host:port[,host:port...]" or "dns:///name:port".
    executor_addrs: str = var("EXECUTOR_ADDRS", "localhost:50053", p.text, SCHEDULER)
    # Scheduler: credits each executor stream keeps while nothing waits, so the next occurrences
    # are leased as they fire and pushed at once (docs/engine.md, "Leased as it fires"). Off by
    # default: an executor that drains may end a stream while standby work is on the wire.
    standby_credits: int = var("STANDBY_CREDITS", 0, p.number(0, 10_000), SCHEDULER)
    # Networks http targets may not reach (api: URLs naming such an address; executor: any address
    # a host resolves to), and, when set, the only networks they may reach. Comma-separated.
    http_deny_networks: str = var("HTTP_DENY_NETWORKS", DEFAULT_DENY, p.networks, EGRESS)
    http_allow_networks: str = var("HTTP_ALLOW_NETWORKS", "", p.networks, EGRESS)
    # Api and executor: http targets may not reach loopback, private, CGNAT, link-local or unique
    # local addresses either (schedcore/netpolicy.py lists them). The k8s manifests turn it on.
    http_deny_private: bool = var("HTTP_DENY_PRIVATE", False, p.parse_bool, EGRESS)
    # Api: `token` requires a bearer token on every public call (docs/security.md); `none` makes
    # every caller an anonymous admin (local development and tests only).
    auth_mode: str = var("AUTH_MODE", "token", p.choice(*AUTH_MODES), API)
    # Api: a secret written as the cluster-wide admin token `bootstrap` at start; empty: none.
    auth_bootstrap_token: str = var("AUTH_BOOTSTRAP_TOKEN", "", p.bearer_secret, API, secret=True)
    # Api and executor: keys that seal secret target values (header values, command environment
    # values) at rest (schedcore/sealing.py); the first seals, all open. Empty: stored as they are.
    secret_keys: tuple[str, ...] = var("SECRET_KEYS", (), p.fernet_keys, EGRESS, secret=True)
    # Api: seconds a replica trusts a verified token before reading it again.
    auth_cache_s: float = var("AUTH_CACHE_SECONDS", 2.0, p.number(0.0, 300.0), API)
    # Api and scheduler (which audits a task pausing itself): newest audit events kept (the
    # stream is trimmed approximately).
    audit_max_events: int = var("AUDIT_MAX_EVENTS", 1_000_000, p.number(1000, 1_000_000_000), REDIS)
    # Api: most tasks one namespace may hold (0: no limit), and per-namespace exceptions.
    namespace_max_tasks: int = var("NAMESPACE_MAX_TASKS", 100_000, p.number(0, MAX_QUOTA), API)
    namespace_max_tasks_overrides: tuple[tuple[str, int], ...] = var(
        "NAMESPACE_MAX_TASKS_OVERRIDES", (), p.overrides(MAX_QUOTA), API
    )
    # Api: most bytes one namespace's stored task specs (payloads, targets and all) may take
    # (0: no limit), and per-namespace exceptions.
    namespace_max_task_bytes: int = var(
        "NAMESPACE_MAX_TASK_BYTES", 256 * 1024 * 1024, p.number(0, MAX_BYTES_QUOTA), API
    )
    namespace_max_task_bytes_overrides: tuple[tuple[str, int], ...] = var(
        "NAMESPACE_MAX_TASK_BYTES_OVERRIDES", (), p.overrides(MAX_BYTES_QUOTA), API
    )
    # Api: most RunTask and RerunExecution calls (together) one namespace may make in a minute
    # of the Redis clock (0: no limit), and per-namespace exceptions.
    namespace_max_runs_per_minute: int = var(
        "NAMESPACE_MAX_RUNS_PER_MINUTE", 600, p.number(0, MAX_QUOTA), API
    )
    namespace_max_runs_per_minute_overrides: tuple[tuple[str, int], ...] = var(
        "NAMESPACE_MAX_RUNS_PER_MINUTE_OVERRIDES", (), p.overrides(MAX_QUOTA), API
    )
    # Api: unary calls one replica runs at once; past it, RESOURCE_EXHAUSTED at once (0: no bound).
    # Small on purpose: a replica is one event loop, which takes up new calls only between the
    # steps of those it runs (docs/security.md, "Load shedding").
    api_max_concurrent_rpcs: int = var("API_MAX_CONCURRENT_RPCS", 32, p.number(0, 100_000), API)
    # Api: requests per second each token may make on one replica, and the burst it may save up
    # (a token bucket per replica and token; 0: no limit).
    api_rate_limit: float = var("API_RATE_LIMIT", 500.0, p.number(0.0, 1_000_000.0), API)
    api_rate_burst: int = var("API_RATE_BURST", 1000, p.number(1, 10_000_000), API)
    # Api: server processes one pod runs on its port (SO_REUSEPORT); 0: one per CPU core the
    # process may use (schedcore/supervisor.py, docs/configuration.md).
    api_processes: int = var("API_PROCESSES", 1, p.number(0, 256), API)
    # Executor: run command targets (programs on this executor's machine). Off by default: only
    # executors deployed for it should run programs (docs/security.md, "Safe targets").
    executor_command_targets: bool = var("EXECUTOR_COMMAND_TARGETS", False, p.parse_bool, EXECUTOR)
    # Executor, with mTLS: the client identities (a SAN of the verified client certificate, or
    # its subject CN when it has no SAN) that may open Execute streams; ("*",): any client.
    executor_allowed_clients: tuple[str, ...] = var(
        "EXECUTOR_ALLOWED_CLIENTS", DEFAULT_ALLOWED_CLIENTS, p.client_names, EXECUTOR
    )
    # Executor: the user command targets run as (a user name, or uid[:gid]); "": the executor's
    # own, which an executor running as root refuses (services/executor/isolation.py).
    executor_command_user: str = var("EXECUTOR_COMMAND_USER", "", p.user, EXECUTOR)
    # Scheduler and executor (they must agree): how long a lease on an occurrence or a running
    # attempt lasts without renewal.
    lease_s: float = var("LEASE_SECONDS", 10.0, p.number(0.5, 3600.0), LEASES)
    # Scheduler: deliveries of one attempt whose executor was lost each time (its lease expired:
    # the process died, or the target crashes it) after which the execution ends FAILED instead
    # of being reclaimed again (docs/engine.md, "Known limits").
    max_deliveries: int = var("MAX_DELIVERIES", 6, p.number(1, 100), SCHEDULER)
    # Scheduler: most occurrences or executions one script call takes.
    batch_size: int = var("BATCH_SIZE", 500, p.number(1, 10_000), SCHEDULER)
    # Scheduler: longest sleep between looks at the due index when nothing is due sooner.
    poll_interval_s: float = var("POLL_INTERVAL_SECONDS", 0.05, p.number(0.001, 10.0), SCHEDULER)
    # Scheduler: an occurrence later than this is "missed" and handled by the missed-time policy.
    missed_tolerance_s: float = var("MISSED_TOLERANCE_SECONDS", 10.0, p.number(0.1, 86_400.0), SCHEDULER)
    # Scheduler, with PARTITIONS > 1: how long a replica's hold on a partition lasts without a
    # heartbeat (one every third of it); a dead replica's partitions are taken on within about
    # this. Under half of MISSED_TOLERANCE_SECONDS, so a takeover never makes occurrences missed.
    partition_lease_s: float = var("PARTITION_LEASE_SECONDS", 3.0, p.number(0.3, 600.0), SCHEDULER)

    # Scheduler: most tasks with export_metrics whose own series one replica exports (bounded
    # label cardinality: docs/metrics.md, "Per-task metrics"); 0: none.
    task_metrics_max: int = var("TASK_METRICS_MAX", 200, p.number(0, 10_000), SCHEDULER)
    # Alerts (docs/alerts.md). Scheduler: seconds between looks at the late-start and
    # running-long checks; delivery attempts before a notification ends FAILED; deliveries one
    # replica makes at once; seconds one may take; days an ended notification is kept.
    alert_sweep_s: float = var("ALERT_SWEEP_SECONDS", 5.0, p.number(0.1, 3600.0), SCHEDULER)
    alert_max_attempts: int = var("ALERT_MAX_ATTEMPTS", 12, p.number(1, 100), SCHEDULER)
    alert_concurrency: int = var("ALERT_CONCURRENCY", 16, p.number(1, 1000), SCHEDULER)
    alert_timeout_s: float = var("ALERT_TIMEOUT_SECONDS", 10.0, p.number(0.1, 300.0), ALERTS)
    notification_retention_days: int = var("NOTIFICATION_RETENTION_DAYS", 30, p.number(1, 3650), SCHEDULER)
    # The dashboard's address as its users reach it (https://host[:port]): notifications link to
    # the execution there. Empty: no link.
    dashboard_url: str = var("DASHBOARD_URL", "", p.web_url, ALERTS)
    # The SMTP server email channels send through: host ("" = email channels fail with "no SMTP
    # server"), port, credentials, the From address, and STARTTLS (on by default; port 465's
    # implicit TLS when SMTP_TLS is true).
    smtp_host: str = var("SMTP_HOST", "", p.text, ALERTS)
    smtp_port: int = var("SMTP_PORT", 587, p.number(1, 65535), ALERTS)
    smtp_username: str = var("SMTP_USERNAME", "", p.text, ALERTS)
    smtp_password: str = var("SMTP_PASSWORD", "", p.text, ALERTS, secret=True)
    smtp_from: str = var("SMTP_FROM", "tasksched@localhost", p.text, ALERTS)
    smtp_starttls: bool = var("SMTP_STARTTLS", True, p.parse_bool, ALERTS)
    smtp_tls: bool = var("SMTP_TLS", False, p.parse_bool, ALERTS)

    def quota(self, namespace: str) -> NamespaceQuota:
        """The quotas of `namespace`: its overrides, else the defaults."""
        return NamespaceQuota(
            dict(self.namespace_max_tasks_overrides).get(namespace, self.namespace_max_tasks),
            dict(self.namespace_max_task_bytes_overrides).get(namespace, self.namespace_max_task_bytes),
            dict(self.namespace_max_runs_per_minute_overrides).get(
                namespace, self.namespace_max_runs_per_minute
            ),
        )

    def quota_namespaces(self) -> set[str]:
        """The namespaces with a quota of their own."""
        overrides = (
            *self.namespace_max_tasks_overrides,
            *self.namespace_max_task_bytes_overrides,
            *self.namespace_max_runs_per_minute_overrides,
        )
        return {namespace for namespace, _ in overrides}

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        default_port: int = 50051,
        service: str | None = None,
        serves: bool = True,
    ) -> Settings:
        """The settings from `env` (default os.environ): every variable `service` reads (None:
        every variable; tools and tests), the others at their defaults. `serves=False`: a tool
        that serves no gRPC (schedctl partitions) is not asked for a certificate."""
        if service is not None and service not in SERVICES:
            raise ValueError(f"unknown service {service!r}")
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f, v in variables():
            if service is None or service in v.readers:
                default = default_port if f.name == "grpc_port" else _default(f)
                values[f.name] = v.parse(env, v.name, default)
        settings = cls(**values)
        if settings.redis_sentinels and settings.redis_url.startswith("unix:"):
            raise SettingsError("REDIS_SENTINELS: REDIS_URL must be redis:// or rediss:// with Sentinel")
        _check_cluster(settings)
        if settings.partitions > 1 and settings.partition_lease_s * 2 >= settings.missed_tolerance_s:
            raise SettingsError(
                f"PARTITION_LEASE_SECONDS: {settings.partition_lease_s:g} must be under half of "
                f"MISSED_TOLERANCE_SECONDS ({settings.missed_tolerance_s:g}): a partition taken over "
                f"after a lease would otherwise have its occurrences handled as missed"
            )
        # Last: a bad value of another variable is named first.
        if serves:
            files = {name: getattr(settings, name.lower()) for name in TLS_FILE_VARIABLES}
            check_tls(settings.grpc_plaintext, files)
        return settings
