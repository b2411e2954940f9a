"""Settings: one frozen object per process, parsed once from the environment at start-up.

A bad value stops the service with a message that names the variable (SettingsError). Every
variable, its default and its meaning is listed in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

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
    _allowed_clients,
    _auth_mode,
    _bootstrap_token,
    _choice,
    _command_user,
    _networks,
    _number,
    _overrides,
    _redis,
    _secret_keys,
    _str,
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
    "TLS_FILE_VARIABLES",
    "NamespaceQuota",
    "Settings",
    "SettingsError",
    "check_tls",
    "parse_bool",
]


@dataclass(frozen=True)
class NamespaceQuota:
    """One namespace's limits on what its tasks hold in Redis (0: no limit)."""

    max_tasks: int
    max_task_bytes: int
    max_runs_per_minute: int = 0


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    """What every service reads from its environment. Defaults are for local development, except
    the secure ones: TLS is on (grpc_plaintext=False) and needs a certificate."""

    # Where Redis is. Only the api and the scheduler use it; the executor never connects.
    redis_url: str = "redis://localhost:6379/0"
    # Redis Sentinel: when set, these are asked where the master named redis_sentinel_master is,
    # and REDIS_URL gives only the credentials, database and TLS to use with it.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: str = ""
    # Prefix of every Redis key, so one Redis can hold several independent deployments.
    redis_key_prefix: str = "ts"
    # Seconds a Redis command may take before the call fails with UNAVAILABLE.
    redis_timeout_s: float = 5.0
    # Address and port the gRPC server listens on.
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 50051
    # gRPC without TLS, server and client side. The default is TLS: a service without a certificate
    # refuses to start unless this is set (docs/security.md).
    grpc_plaintext: bool = False
    # PEM files: the certificate this service presents (as a server, and as a client for mTLS),
    # its key, the CA that signs the servers it connects to ("": gRPC's default roots), and the
    # CA that signs client certificates (set: clients must present one, i.e. mTLS).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    tls_client_ca_file: str = ""
    # A second, plaintext port serving only the health service, for Kubernetes' grpc probes
    # (they cannot do TLS with a client certificate). 0: none.
    health_port: int = 0
    # Seconds in-flight calls get to finish after SIGTERM.
    shutdown_grace_s: float = 10.0
    # Servers (not the executor) end each client connection after this long, so clients re-resolve.
    max_connection_age_s: float = 300.0
    # Seconds between health probes of Redis.
    health_interval_s: float = 1.0
    log_level: str = "INFO"
    # Port of the Prometheus /metrics HTTP endpoint (on GRPC_HOST). 0: no metrics server.
    metrics_port: int = 0
    # Upper bound of a task's serialized payload (and of an http body).
    max_payload_bytes: int = 256 * 1024
    # Execution history retention: newest N per task, and nothing older than this.
    history_max_per_task: int = 1000
    history_max_age_s: int = 7 * 24 * 3600
    # Seconds a CreateTask request_id is remembered.
    request_id_ttl_s: int = 24 * 3600
    # Seconds a ListTasks / ListExecutions page token stays valid.
    page_token_ttl_s: int = 24 * 3600
    # Secret that signs page tokens. Empty: a random one is created once and shared through Redis.
    page_token_secret: str = ""
    # Api: a List response stops before it would pass this many bytes serialized (it then carries
    # a next_page_token), whatever its page_size; a single item larger than this is sent alone.
    list_page_max_bytes: int = DEFAULT_LIST_PAGE_BYTES
    # Name of this replica in logs and execution records. Default: <hostname>-<pid>.
    instance_id: str = dataclasses.field(default_factory=_default_instance_id)
    # Executor: attempts one replica runs at once.
    executor_concurrency: int = 100
    # Executor: at most this many items accepted beyond the running ones, queued until a slot
    # frees (leases renewed like running ones); fewer when attempts finish slowly (engine.py).
    executor_prefetch: int = 100
    # Executor: bound of an execution's stored output (log record, http response excerpt).
    output_limit_bytes: int = 8192
    # Executor: where to report results when the stream to the dispatching scheduler is gone.
    scheduler_addr: str = "localhost:50052"
    # Scheduler: the executors, as a gRPC target: "host:port[,host:port...]" or "dns:///name:port".
    executor_addrs: str = "localhost:50053"
    # Networks http targets may not reach (api: URLs naming such an address; executor: any address
    # a host resolves to), and, when set, the only networks they may reach. Comma-separated.
    http_deny_networks: str = DEFAULT_DENY
    http_allow_networks: str = ""
    # Api and executor: http targets may not reach loopback, private, CGNAT, link-local or unique
    # local addresses either (schedcore/netpolicy.py lists them). The k8s manifests turn it on.
    http_deny_private: bool = False
    # Api: `token` requires a bearer token on every public call (docs/security.md); `none` makes
    # every caller an anonymous admin (local development and tests only).
    auth_mode: str = "token"
    # Api: a secret written as the cluster-wide admin token `bootstrap` at start; empty: none.
    auth_bootstrap_token: str = dataclasses.field(default="", repr=False)
    # Api and executor: keys that seal secret target values (header values, command environment
    # values) at rest (schedcore/sealing.py); the first seals, all open. Empty: stored as they are.
    secret_keys: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    # Api: seconds a replica trusts a verified token before reading it again.
    auth_cache_s: float = 2.0
    # Api: newest audit events kept (the stream is trimmed approximately).
    audit_max_events: int = 1_000_000
    # Api: most tasks one namespace may hold (0: no limit), and per-namespace exceptions.
    namespace_max_tasks: int = 100_000
    namespace_max_tasks_overrides: tuple[tuple[str, int], ...] = ()
    # Api: most bytes one namespace's stored task specs (payloads, targets and all) may take
    # (0: no limit), and per-namespace exceptions.
    namespace_max_task_bytes: int = 256 * 1024 * 1024
    namespace_max_task_bytes_overrides: tuple[tuple[str, int], ...] = ()
    # Api: most RunTask calls one namespace may make in a minute of the Redis clock (0: no
    # limit), and per-namespace exceptions.
    namespace_max_runs_per_minute: int = 600
    namespace_max_runs_per_minute_overrides: tuple[tuple[str, int], ...] = ()
    # Api: unary calls one replica runs at once; past it, RESOURCE_EXHAUSTED at once (0: no bound).
    # Small on purpose: a replica is one event loop, which takes up new calls only between the
    # steps of those it runs (docs/security.md, "Load shedding").
    api_max_concurrent_rpcs: int = 32
    # Api: requests per second each token may make on one replica, and the burst it may save up
    # (a token bucket per replica and token; 0: no limit).
    api_rate_limit: float = 500.0
    api_rate_burst: int = 1000
    # Api: server processes one pod runs on its port (SO_REUSEPORT); 0: one per CPU core the
    # process may use (schedcore/supervisor.py, docs/configuration.md).
    api_processes: int = 1
    # Executor: run command targets (programs on this executor's machine). Off by default: only
    # executors deployed for it should run programs (docs/security.md, "Safe targets").
    executor_command_targets: bool = False
    # Executor, with mTLS: the client identities (a SAN of the verified client certificate, or
    # its subject CN when it has no SAN) that may open Execute streams; ("*",): any client.
    executor_allowed_clients: tuple[str, ...] = DEFAULT_ALLOWED_CLIENTS
    # Executor: the user command targets run as (a user name, or uid[:gid]); "": the executor's
    # own, which an executor running as root refuses (services/executor/isolation.py).
    executor_command_user: str = ""
    # Scheduler: how long a lease on an occurrence or a running attempt lasts without renewal.
    lease_s: float = 10.0
    # Scheduler: most occurrences or executions one script call takes.
    batch_size: int = 500
    # Scheduler: longest sleep between looks at the due index when nothing is due sooner.
    poll_interval_s: float = 0.05
    # Scheduler: an occurrence later than this is "missed" and handled by the missed-time policy.
    missed_tolerance_s: float = 10.0

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
        cls, env: Mapping[str, str] | None = None, *, default_port: int = 50051, uses_redis: bool = True
    ) -> Settings:
        """The settings from `env` (default os.environ). `uses_redis=False` (the executor) leaves
        the REDIS_* variables unread, at their defaults: a service does not refuse to start on a
        setting it never uses."""
        env = os.environ if env is None else env
        redis = _redis(env) if uses_redis else {}
        plaintext = parse_bool(env, "GRPC_PLAINTEXT", False)
        tls = {name: _str(env, name, "") for name in TLS_FILE_VARIABLES}
        settings = cls(
            **redis,
            grpc_host=_str(env, "GRPC_HOST", "0.0.0.0"),
            grpc_port=_number(env, "GRPC_PORT", default_port, 0, 65535),
            grpc_plaintext=plaintext,
            tls_cert_file=tls["TLS_CERT_FILE"],
            tls_key_file=tls["TLS_KEY_FILE"],
            tls_ca_file=tls["TLS_CA_FILE"],
            tls_client_ca_file=tls["TLS_CLIENT_CA_FILE"],
            health_port=_number(env, "HEALTH_PORT", 0, 0, 65535),
            shutdown_grace_s=_number(env, "SHUTDOWN_GRACE_SECONDS", 10.0, 0.0, 3600.0),
            max_connection_age_s=_number(env, "MAX_CONNECTION_AGE_SECONDS", 300.0, 1.0, 86_400.0),
            health_interval_s=_number(env, "HEALTH_INTERVAL_SECONDS", 1.0, 0.05, 60.0),
            log_level=_choice(env, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            metrics_port=_number(env, "METRICS_PORT", 0, 0, 65535),
            max_payload_bytes=_number(env, "MAX_PAYLOAD_BYTES", 256 * 1024, 1024, 3 * 1024 * 1024),
            history_max_per_task=_number(env, "HISTORY_MAX_PER_TASK", 1000, 1, 10_000_000),
            history_max_age_s=_number(
                env, "HISTORY_MAX_AGE_SECONDS", 7 * 24 * 3600, 60, 10 * 365 * 24 * 3600
            ),
            request_id_ttl_s=_number(env, "REQUEST_ID_TTL_SECONDS", 24 * 3600, 60, 30 * 24 * 3600),
            page_token_ttl_s=_number(env, "PAGE_TOKEN_TTL_SECONDS", 24 * 3600, 60, 30 * 24 * 3600),
            page_token_secret=_str(env, "PAGE_TOKEN_SECRET", ""),
            list_page_max_bytes=_number(
                env, "LIST_PAGE_MAX_BYTES", DEFAULT_LIST_PAGE_BYTES, *LIST_PAGE_BYTES_RANGE
            ),
            instance_id=_str(env, "INSTANCE_ID", _default_instance_id()),
            executor_concurrency=_number(env, "EXECUTOR_CONCURRENCY", 100, 1, 100_000),
            executor_prefetch=_number(env, "EXECUTOR_PREFETCH", 100, 0, 100_000),
            output_limit_bytes=_number(env, "OUTPUT_LIMIT_BYTES", 8192, 256, 1024 * 1024),
            scheduler_addr=_str(env, "SCHEDULER_ADDR", "localhost:50052"),
            executor_addrs=_str(env, "EXECUTOR_ADDRS", "localhost:50053"),
            lease_s=_number(env, "LEASE_SECONDS", 10.0, 0.5, 3600.0),
            batch_size=_number(env, "BATCH_SIZE", 500, 1, 10_000),
            poll_interval_s=_number(env, "POLL_INTERVAL_SECONDS", 0.05, 0.001, 10.0),
            missed_tolerance_s=_number(env, "MISSED_TOLERANCE_SECONDS", 10.0, 0.1, 86_400.0),
            http_deny_networks=_networks(env, "HTTP_DENY_NETWORKS", DEFAULT_DENY),
            http_allow_networks=_networks(env, "HTTP_ALLOW_NETWORKS", ""),
            http_deny_private=parse_bool(env, "HTTP_DENY_PRIVATE", False),
            auth_mode=_auth_mode(env),
            auth_bootstrap_token=_bootstrap_token(env),
            secret_keys=_secret_keys(env),
            auth_cache_s=_number(env, "AUTH_CACHE_SECONDS", 2.0, 0.0, 300.0),
            audit_max_events=_number(env, "AUDIT_MAX_EVENTS", 1_000_000, 1000, 1_000_000_000),
            executor_command_targets=parse_bool(env, "EXECUTOR_COMMAND_TARGETS", False),
            executor_allowed_clients=_allowed_clients(env),
            executor_command_user=_command_user(env),
            namespace_max_tasks=_number(env, "NAMESPACE_MAX_TASKS", 100_000, 0, MAX_QUOTA),
            namespace_max_tasks_overrides=_overrides(env, "NAMESPACE_MAX_TASKS_OVERRIDES", MAX_QUOTA),
            namespace_max_task_bytes=_number(
                env, "NAMESPACE_MAX_TASK_BYTES", 256 * 1024 * 1024, 0, MAX_BYTES_QUOTA
            ),
            namespace_max_task_bytes_overrides=_overrides(
                env, "NAMESPACE_MAX_TASK_BYTES_OVERRIDES", MAX_BYTES_QUOTA
            ),
            namespace_max_runs_per_minute=_number(env, "NAMESPACE_MAX_RUNS_PER_MINUTE", 600, 0, MAX_QUOTA),
            namespace_max_runs_per_minute_overrides=_overrides(
                env, "NAMESPACE_MAX_RUNS_PER_MINUTE_OVERRIDES", MAX_QUOTA
            ),
            api_max_concurrent_rpcs=_number(env, "API_MAX_CONCURRENT_RPCS", 32, 0, 100_000),
            api_rate_limit=_number(env, "API_RATE_LIMIT", 500.0, 0.0, 1_000_000.0),
            api_rate_burst=_number(env, "API_RATE_BURST", 1000, 1, 10_000_000),
            api_processes=_number(env, "API_PROCESSES", 1, 0, 256),
        )
        check_tls(plaintext, tls)  # last: a bad value of another variable is named first
        return settings
