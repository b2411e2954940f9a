"""Settings.from_env: defaults, every variable, and bad values that name their variable."""

from __future__ import annotations

import dataclasses

import pytest

from schedcore.sealing import new_key
from schedcore.settings import SERVICES, NamespaceQuota, Settings, SettingsError, variables

# Local development's explicit opt-out of TLS: without it (or a certificate) nothing starts.
DEV = {"GRPC_PLAINTEXT": "true"}
KEY_1, KEY_2 = new_key(), new_key()


def test_defaults_from_an_empty_environment() -> None:
    s = Settings.from_env(DEV)
    assert s == Settings(grpc_plaintext=True)
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.redis_key_prefix == "ts"
    assert s.redis_timeout_s == 5.0
    assert s.grpc_host == "0.0.0.0"
    assert s.grpc_port == 50051
    assert s.shutdown_grace_s == 10.0
    assert s.health_interval_s == 1.0
    assert s.log_level == "INFO"
    assert s.max_payload_bytes == 256 * 1024
    assert s.history_max_per_task == 1000
    assert s.history_max_age_s == 7 * 24 * 3600
    assert s.request_id_ttl_s == 24 * 3600
    assert s.page_token_ttl_s == 24 * 3600
    assert s.page_token_secret == ""
    assert s.list_page_max_bytes == 4 * 1024 * 1024
    assert s.metrics_port == 0
    # Secure by default: tokens required, no bootstrap token.
    assert s.auth_mode == "token"
    assert s.auth_bootstrap_token == ""
    assert s.auth_cache_s == 2.0
    assert s.audit_max_events == 1_000_000
    assert s.executor_command_targets is False
    assert s.executor_allowed_clients == ("scheduler",)
    assert s.executor_command_user == ""
    assert (s.namespace_max_tasks, s.namespace_max_tasks_overrides) == (100_000, ())
    assert (s.namespace_max_task_bytes, s.namespace_max_task_bytes_overrides) == (256 * 1024 * 1024, ())
    assert (s.namespace_max_runs_per_minute, s.namespace_max_runs_per_minute_overrides) == (600, ())
    assert (s.api_max_concurrent_rpcs, s.api_rate_limit, s.api_rate_burst) == (32, 500.0, 1000)
    assert s.api_processes == 1


def test_default_port_is_the_services_own() -> None:
    assert Settings.from_env(DEV, default_port=50052).grpc_port == 50052
    assert Settings.from_env({**DEV, "GRPC_PORT": "7000"}, default_port=50052).grpc_port == 7000


def test_empty_or_blank_variables_mean_the_default() -> None:
    env = {name: "" for name in ENV_NAMES}
    env["GRPC_PORT"] = "   "
    assert Settings.from_env({**env, **DEV}) == Settings(grpc_plaintext=True)


def test_reads_os_environ_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_PORT", "6001")
    monkeypatch.setenv("GRPC_PLAINTEXT", "true")
    monkeypatch.setenv("REDIS_KEY_PREFIX", "envprefix")
    s = Settings.from_env()
    assert (s.grpc_port, s.redis_key_prefix) == (6001, "envprefix")


FULL_ENV = {
    "REDIS_URL": "rediss://user:secret@redis.example:6380/3",
    "REDIS_KEY_PREFIX": "prod",
    "PARTITIONS": "4",
    "PARTITION_LEASE_SECONDS": "2.5",
    "REDIS_TIMEOUT_SECONDS": "2.5",
    "REDIS_WAIT_REPLICAS": "1",
    "GRPC_HOST": "127.0.0.1",
    "GRPC_PORT": "6000",
    "SHUTDOWN_GRACE_SECONDS": "0",
    "HEALTH_INTERVAL_SECONDS": "0.25",
    "MAX_CONNECTION_AGE_SECONDS": "30",
    "REDIS_SENTINELS": "sentinel-0:26379,sentinel-1:26379",
    "REDIS_SENTINEL_MASTER": "suite",
    "REDIS_SENTINEL_PASSWORD": "s3ntinel",
    # Not with REDIS_SENTINELS, nor with a database other than 0: test_every_variable_is_parsed
    # reads it on its own.
    "REDIS_CLUSTER_NODES": "redis-0:6379, redis-1:6380,[::1]:7000",
    "LOG_LEVEL": "debug",
    "METRICS_PORT": "9100",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
    "OTEL_TRACES_SAMPLER_ARG": "0.25",
    "MAX_PAYLOAD_BYTES": "4096",
    "HISTORY_MAX_PER_TASK": "7",
    "HISTORY_MAX_AGE_SECONDS": "3600",
    "REQUEST_ID_TTL_SECONDS": "120",
    "PAGE_TOKEN_TTL_SECONDS": "600",
    "PAGE_TOKEN_SECRET": "s3cret",
    "LIST_PAGE_MAX_BYTES": "1048576",
    "INSTANCE_ID": "exec-7",
    "EXECUTOR_CONCURRENCY": "12",
    "EXECUTOR_PREFETCH": "7",
    "OUTPUT_LIMIT_BYTES": "1024",
    "SCHEDULER_ADDR": "sched:50052",
    "EXECUTOR_ADDRS": "dns:///executors:50053",
    "STANDBY_CREDITS": "4",
    "LEASE_SECONDS": "3",
    "BATCH_SIZE": "50",
    "MAX_DELIVERIES": "3",
    "POLL_INTERVAL_SECONDS": "0.02",
    "MISSED_TOLERANCE_SECONDS": "30",
    "HTTP_DENY_NETWORKS": "10.0.0.0/8, 169.254.0.0/16",
    "HTTP_ALLOW_NETWORKS": "192.168.1.0/24",
    "GRPC_PLAINTEXT": "false",
    "TLS_CERT_FILE": "/etc/tls/tls.crt",
    "TLS_KEY_FILE": "/etc/tls/tls.key",
    "TLS_CA_FILE": "/etc/tls/ca.crt",
    "TLS_CLIENT_CA_FILE": "/etc/tls/client-ca.crt",
    "HEALTH_PORT": "8081",
    "AUTH_MODE": "None",
    "AUTH_BOOTSTRAP_TOKEN": "b" * 32,
    "SECRET_KEYS": f"{KEY_1}, {KEY_2}",
    "AUTH_CACHE_SECONDS": "0.5",
    "AUDIT_MAX_EVENTS": "5000",
    "EXECUTOR_COMMAND_TARGETS": "true",
    "EXECUTOR_ALLOWED_CLIENTS": "scheduler, scheduler.suite.svc",
    "HTTP_DENY_PRIVATE": "true",
    "EXECUTOR_COMMAND_USER": "65534:65534",
    "NAMESPACE_MAX_TASKS": "500",
    "NAMESPACE_MAX_TASKS_OVERRIDES": "team-b=0, team-a=20",
    "NAMESPACE_MAX_TASK_BYTES": "1000000",
    "NAMESPACE_MAX_TASK_BYTES_OVERRIDES": "team-a=5000",
    "NAMESPACE_MAX_RUNS_PER_MINUTE": "60",
    "NAMESPACE_MAX_RUNS_PER_MINUTE_OVERRIDES": "ops=0",
    "API_MAX_CONCURRENT_RPCS": "50",
    "API_RATE_LIMIT": "2.5",
    "API_RATE_BURST": "10",
    "API_PROCESSES": "0",
    "TASK_METRICS_MAX": "5",
    "ALERT_SWEEP_SECONDS": "0.5",
    "ALERT_MAX_ATTEMPTS": "3",
    "ALERT_CONCURRENCY": "4",
    "ALERT_TIMEOUT_SECONDS": "2",
    "NOTIFICATION_RETENTION_DAYS": "7",
    "DASHBOARD_URL": "https://sched.example.com",
    "SMTP_HOST": "smtp.example.com",
    "SMTP_PORT": "465",
    "SMTP_USERNAME": "alerts",
    "SMTP_PASSWORD": "pw",
    "SMTP_FROM": "alerts@example.com",
    "SMTP_STARTTLS": "false",
    "SMTP_TLS": "true",
}
ENV_NAMES = list(FULL_ENV)


def test_every_variable_is_parsed() -> None:
    env = dict(FULL_ENV)
    cluster = Settings.from_env({**DEV, "REDIS_CLUSTER_NODES": env.pop("REDIS_CLUSTER_NODES")})
    assert cluster.redis_cluster_nodes == (("redis-0", 6379), ("redis-1", 6380), ("::1", 7000))
    s = Settings.from_env(env)
    assert s == Settings(
        redis_url="rediss://user:secret@redis.example:6380/3",
        redis_key_prefix="prod",
        partitions=4,
        partition_lease_s=2.5,
        redis_timeout_s=2.5,
        redis_wait_replicas=1,
        grpc_host="127.0.0.1",
        grpc_port=6000,
        shutdown_grace_s=0.0,
        health_interval_s=0.25,
        max_connection_age_s=30.0,
        redis_sentinels=(("sentinel-0", 26379), ("sentinel-1", 26379)),
        redis_sentinel_master="suite",
        redis_sentinel_password="s3ntinel",
        log_level="DEBUG",
        metrics_port=9100,
        otel_endpoint="http://collector:4317",
        otel_sample_ratio=0.25,
        max_payload_bytes=4096,
        history_max_per_task=7,
        history_max_age_s=3600,
        request_id_ttl_s=120,
        page_token_ttl_s=600,
        page_token_secret="s3cret",
        list_page_max_bytes=1048576,
        instance_id="exec-7",
        executor_concurrency=12,
        executor_prefetch=7,
        output_limit_bytes=1024,
        scheduler_addr="sched:50052",
        executor_addrs="dns:///executors:50053",
        standby_credits=4,
        lease_s=3.0,
        batch_size=50,
        max_deliveries=3,
        poll_interval_s=0.02,
        missed_tolerance_s=30.0,
        http_deny_networks="10.0.0.0/8, 169.254.0.0/16",
        http_allow_networks="192.168.1.0/24",
        grpc_plaintext=False,
        tls_cert_file="/etc/tls/tls.crt",
        tls_key_file="/etc/tls/tls.key",
        tls_ca_file="/etc/tls/ca.crt",
        tls_client_ca_file="/etc/tls/client-ca.crt",
        health_port=8081,
        auth_mode="none",
        auth_bootstrap_token="b" * 32,
        secret_keys=(KEY_1, KEY_2),
        auth_cache_s=0.5,
        audit_max_events=5000,
        executor_command_targets=True,
        executor_allowed_clients=("scheduler", "scheduler.suite.svc"),
        http_deny_private=True,
        executor_command_user="65534:65534",
        namespace_max_tasks=500,
        namespace_max_tasks_overrides=(("team-a", 20), ("team-b", 0)),
        namespace_max_task_bytes=1_000_000,
        namespace_max_task_bytes_overrides=(("team-a", 5000),),
        namespace_max_runs_per_minute=60,
        namespace_max_runs_per_minute_overrides=(("ops", 0),),
        api_max_concurrent_rpcs=50,
        api_rate_limit=2.5,
        api_rate_burst=10,
        api_processes=0,
        task_metrics_max=5,
        alert_sweep_s=0.5,
        alert_max_attempts=3,
        alert_concurrency=4,
        alert_timeout_s=2.0,
        notification_retention_days=7,
        dashboard_url="https://sched.example.com",
        smtp_host="smtp.example.com",
        smtp_port=465,
        smtp_username="alerts",
        smtp_password="pw",
        smtp_from="alerts@example.com",
        smtp_starttls=False,
        smtp_tls=True,
    )
    # Every field of Settings has a variable here: a new setting needs a line in this test.
    assert len(dataclasses.fields(Settings)) == len(FULL_ENV)


def test_values_are_trimmed() -> None:
    s = Settings.from_env({**DEV, "GRPC_PORT": " 6000 ", "REDIS_KEY_PREFIX": " p ", "LOG_LEVEL": " warning "})
    assert (s.grpc_port, s.redis_key_prefix, s.log_level) == (6000, "p", "WARNING")


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "redis://h", "rediss://u:p@h:6380/1", "unix:///var/run/redis.sock"]
)
def test_accepted_redis_urls(url: str) -> None:
    assert Settings.from_env({**DEV, "REDIS_URL": url}).redis_url == url


BAD_VALUES = [
    ("GRPC_PORT", "abc", "expected an integer, got 'abc'"),
    ("GRPC_PORT", "70000", "between 0 and 65535, got 70000"),
    ("GRPC_PORT", "-1", "between 0 and 65535"),
    ("GRPC_PORT", "1.5", "expected an integer"),
    ("METRICS_PORT", "65536", "between 0 and 65535"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317", "expected http(s)://host"),
    ("OTEL_TRACES_SAMPLER_ARG", "2", "between 0.0 and 1.0"),
    ("REDIS_URL", "http://x", "got 'http://x'"),
    ("REDIS_URL", "redis://", "expected redis://"),
    ("REDIS_URL", "localhost:6379", "expected redis://"),
    ("LOG_LEVEL", "LOUD", "must be one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"),
    ("SHUTDOWN_GRACE_SECONDS", "-1", "between 0.0 and 3600.0, got -1.0"),
    ("SHUTDOWN_GRACE_SECONDS", "soon", "expected a number, got 'soon'"),
    ("SHUTDOWN_GRACE_SECONDS", "nan", "between"),
    ("REDIS_TIMEOUT_SECONDS", "0", "between 0.05 and 300.0"),
    ("REDIS_WAIT_REPLICAS", "-1", "between 0 and 16, got -1"),
    ("REDIS_WAIT_REPLICAS", "all", "expected an integer"),
    ("HEALTH_INTERVAL_SECONDS", "inf", "between 0.05 and 60.0"),
    ("MAX_CONNECTION_AGE_SECONDS", "0", "between 1.0 and 86400.0"),
    ("MAX_PAYLOAD_BYTES", "100", "between 1024 and 3145728"),
    ("HISTORY_MAX_PER_TASK", "0", "between 1 and"),
    ("HISTORY_MAX_AGE_SECONDS", "59", "between 60 and"),
    ("REQUEST_ID_TTL_SECONDS", "x", "expected an integer"),
    ("PAGE_TOKEN_TTL_SECONDS", "99999999", "between 60 and 2592000"),
    ("LIST_PAGE_MAX_BYTES", "8388608", "between 65536 and 7340032"),
    ("GRPC_PLAINTEXT", "maybe", "expected true or false, got 'maybe'"),
    ("HEALTH_PORT", "65536", "between 0 and 65535"),
    ("AUTH_MODE", "off", "must be one of token, none, got 'off'"),
    ("AUTH_CACHE_SECONDS", "-1", "between 0.0 and 300.0"),
    ("AUDIT_MAX_EVENTS", "10", "between 1000 and"),
    ("EXECUTOR_COMMAND_TARGETS", "yes please", "expected true or false, got 'yes please'"),
    (
        "EXECUTOR_ALLOWED_CLIENTS",
        "scheduler,,api",
        "expected name[,name...] (certificate SAN or CN) or *",
    ),
    ("EXECUTOR_ALLOWED_CLIENTS", "scheduler,", "got 'scheduler,'"),
    ("EXECUTOR_ALLOWED_CLIENTS", "*,scheduler", "* (any client) stands alone"),
    ("HTTP_DENY_PRIVATE", "mostly", "expected true or false, got 'mostly'"),
    ("EXECUTOR_COMMAND_USER", "nobody:nogroup", "or uid[:gid], got 'nobody:nogroup'"),
    ("EXECUTOR_COMMAND_USER", "a b", "expected a user name or uid[:gid]"),
    ("NAMESPACE_MAX_TASKS", "-1", "between 0 and"),
    ("NAMESPACE_MAX_TASKS_OVERRIDES", "team-a", "expected namespace=N"),
    ("NAMESPACE_MAX_TASKS_OVERRIDES", "Team_A=5", "got 'Team_A=5'"),
    ("NAMESPACE_MAX_TASKS_OVERRIDES", "team-a=lots", "got 'team-a=lots'"),
    ("NAMESPACE_MAX_TASK_BYTES", "2000000000000", "between 0 and"),
    ("NAMESPACE_MAX_TASK_BYTES_OVERRIDES", "a=1,b", "got 'b'"),
    ("NAMESPACE_MAX_RUNS_PER_MINUTE", "many", "expected an integer"),
    ("NAMESPACE_MAX_RUNS_PER_MINUTE_OVERRIDES", "=5", "expected namespace=N"),
    ("API_MAX_CONCURRENT_RPCS", "-1", "between 0 and 100000"),
    ("API_RATE_LIMIT", "fast", "expected a number"),
    ("API_RATE_BURST", "0", "between 1 and"),
    ("API_PROCESSES", "-1", "between 0 and 256"),
    ("TASK_METRICS_MAX", "-1", "between 0 and 10000"),
    ("ALERT_SWEEP_SECONDS", "0", "between 0.1 and"),
    ("ALERT_MAX_ATTEMPTS", "0", "between 1 and 100"),
    ("ALERT_CONCURRENCY", "lots", "expected an integer"),
    ("ALERT_TIMEOUT_SECONDS", "301", "between 0.1 and 300"),
    ("NOTIFICATION_RETENTION_DAYS", "0", "between 1 and"),
    ("DASHBOARD_URL", "sched.example.com", "expected http(s)://host"),
    ("SMTP_PORT", "0", "between 1 and 65535"),
    ("SMTP_STARTTLS", "maybe", "expected"),
    ("SMTP_TLS", "maybe", "expected"),
]


@pytest.mark.parametrize(("name", "value", "fragment"), BAD_VALUES)
def test_bad_value_raises_settings_error_naming_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**DEV, name: value})
    message = str(info.value)
    assert message.startswith(f"{name}: "), message
    assert fragment in message


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:abc/0",  # a port that is not a number
        "redis://localhost:99999/0",  # a port out of range
        "redis://[::1/0",  # an unterminated IPv6 host: urlparse itself raises ValueError
    ],
)
def test_unusable_redis_url_raises_settings_error_naming_redis_url(url: str) -> None:
    # The service must stop at start-up with a message naming REDIS_URL (exit status 2), not
    # crash later with a traceback when the Redis client parses the URL.
    with pytest.raises(SettingsError, match=r"^REDIS_URL: "):
        Settings.from_env({**DEV, "REDIS_URL": url})


def test_settings_error_is_a_value_error_and_settings_are_frozen() -> None:
    assert issubclass(SettingsError, ValueError)
    s = Settings.from_env(DEV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.grpc_port = 1  # type: ignore[misc]


def test_bad_networks_are_refused() -> None:
    with pytest.raises(SettingsError, match=r"HTTP_DENY_NETWORKS: '10\.0\.0\.0/33' is not a network"):
        Settings.from_env({**DEV, "HTTP_DENY_NETWORKS": "10.0.0.0/33"})
    with pytest.raises(SettingsError, match="HTTP_ALLOW_NETWORKS"):
        Settings.from_env({**DEV, "HTTP_ALLOW_NETWORKS": "localhost"})


def test_tls_is_the_default_and_needs_a_certificate() -> None:
    assert Settings().grpc_plaintext is False
    for env in ({}, {"GRPC_PLAINTEXT": "false"}, {"TLS_CA_FILE": "/ca.pem"}):
        with pytest.raises(SettingsError) as info:
            Settings.from_env(env)
        message = str(info.value)
        assert "TLS_CERT_FILE" in message and "TLS_KEY_FILE" in message and "GRPC_PLAINTEXT=true" in message


def test_a_certificate_and_its_key_turn_tls_on() -> None:
    s = Settings.from_env({"TLS_CERT_FILE": "/c.pem", "TLS_KEY_FILE": "/k.pem"})
    assert (s.grpc_plaintext, s.tls_cert_file, s.tls_key_file, s.tls_ca_file) == (
        False,
        "/c.pem",
        "/k.pem",
        "",
    )
    for value in ("true", "TRUE", "1", "yes", "on"):
        assert Settings.from_env({"GRPC_PLAINTEXT": value}).grpc_plaintext is True


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"TLS_CERT_FILE": "/c.pem"}, "TLS_CERT_FILE and TLS_KEY_FILE: set both"),
        ({"TLS_KEY_FILE": "/k.pem"}, "TLS_CERT_FILE and TLS_KEY_FILE: set both"),
        (
            {"GRPC_PLAINTEXT": "true", "TLS_CERT_FILE": "/c.pem", "TLS_KEY_FILE": "/k.pem"},
            "GRPC_PLAINTEXT=true and TLS_CERT_FILE, TLS_KEY_FILE are both set",
        ),
        ({"GRPC_PLAINTEXT": "true", "TLS_CLIENT_CA_FILE": "/ca.pem"}, "TLS_CLIENT_CA_FILE are both set"),
    ],
)
def test_contradicting_tls_settings_are_refused(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        Settings.from_env(env)


def test_a_short_bootstrap_token_is_refused_without_echoing_it() -> None:
    for bad in ("x" * 31, "has a space in it and is long enough", "tab\tin-it-" + "y" * 30):
        with pytest.raises(SettingsError, match=r"^AUTH_BOOTSTRAP_TOKEN: must be 32-512") as info:
            Settings.from_env({**DEV, "AUTH_BOOTSTRAP_TOKEN": bad})
        assert bad not in str(info.value)
    ok = "z" * 32
    assert Settings.from_env({**DEV, "AUTH_BOOTSTRAP_TOKEN": ok}).auth_bootstrap_token == ok
    assert ok not in repr(Settings.from_env({**DEV, "AUTH_BOOTSTRAP_TOKEN": ok}))  # nor in a logged repr


def test_secret_keys_must_be_fernet_keys_and_are_never_echoed() -> None:
    bad = "not-a-fernet-key-but-a-secret"
    with pytest.raises(SettingsError, match=r"^SECRET_KEYS: key 2 of 2 is not a Fernet key") as info:
        Settings.from_env({**DEV, "SECRET_KEYS": f"{KEY_1},{bad}"})
    assert bad not in str(info.value)
    assert KEY_1 not in repr(Settings.from_env({**DEV, "SECRET_KEYS": KEY_1}))  # nor in a logged repr
    assert Settings.from_env(DEV).secret_keys == ()


def test_a_namespace_override_wins_over_the_default_quota() -> None:
    s = Settings.from_env(
        {
            **DEV,
            "NAMESPACE_MAX_TASKS": "10",
            "NAMESPACE_MAX_TASKS_OVERRIDES": "big=0,small=2",
            "NAMESPACE_MAX_TASK_BYTES_OVERRIDES": "small=500",
            "NAMESPACE_MAX_RUNS_PER_MINUTE_OVERRIDES": "ops=5",
        }
    )
    assert s.quota("big") == NamespaceQuota(0, 256 * 1024 * 1024, 600)
    assert s.quota("small") == NamespaceQuota(2, 500, 600)
    assert s.quota("ops") == NamespaceQuota(10, 256 * 1024 * 1024, 5)
    assert s.quota("other") == NamespaceQuota(10, 256 * 1024 * 1024, 600)
    assert s.quota_namespaces() == {"big", "small", "ops"}


def test_the_namespace_pattern_is_the_key_modules() -> None:
    # settings.py keeps a copy (it must not import schedcore.store, which loads redis).
    from schedcore import settings
    from schedcore.store import keys

    assert settings.NAMESPACE.pattern == keys.NAMESPACE.pattern


# The ui and schedctl read their own variables with the services' boolean parser: 1/yes/on are
# true there too, and a value that is neither true nor false is refused, naming the variable.
@pytest.mark.parametrize("raw", ["true", "1", "yes", "on", "TRUE", " On "])
def test_ui_and_cli_accept_the_services_true_values(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    from cli.client import security
    from ui.client import api_security

    monkeypatch.setenv("GRPC_PLAINTEXT", raw)
    monkeypatch.setenv("SCHEDCTL_PLAINTEXT", raw)
    assert api_security().plaintext is True
    assert security(None, None, None, None).plaintext is True


@pytest.mark.parametrize("raw", ["false", "0", "no", "off", ""])
def test_ui_and_cli_accept_the_services_false_values(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    from cli.client import security
    from ui.client import api_security

    monkeypatch.setenv("GRPC_PLAINTEXT", raw)
    monkeypatch.setenv("SCHEDCTL_PLAINTEXT", raw)
    assert api_security().plaintext is False
    assert security(None, None, None, None).plaintext is False


def test_ui_and_cli_refuse_a_boolean_that_is_neither(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.client import security
    from ui.client import api_security

    monkeypatch.setenv("GRPC_PLAINTEXT", "maybe")
    monkeypatch.setenv("SCHEDCTL_PLAINTEXT", "maybe")
    with pytest.raises(SettingsError, match="GRPC_PLAINTEXT"):
        api_security()
    with pytest.raises(SettingsError, match="SCHEDCTL_PLAINTEXT"):
        security(None, None, None, None)


class _Recording(dict[str, str]):
    """An environment that remembers every variable Settings.from_env asks for."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)


def _documented_service_variables() -> set[str]:
    """The variable names in the tables of docs/configuration.md, except the dashboard's (the
    ui reads its own environment)."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    names: set[str] = set()
    section = ""
    for line in text.splitlines():
        if line.startswith("#"):
            section = line
        elif line.startswith("| `") and "Dashboard" not in section:
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


# Documented for the executor, but read by httpx itself, not by Settings.
READ_BY_HTTPX = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}


def test_every_variable_read_is_documented_and_nothing_documented_is_unread() -> None:
    env = _Recording(dict(DEV))
    Settings.from_env(env)
    documented = _documented_service_variables() - READ_BY_HTTPX
    assert env.read - documented == set(), "read by Settings.from_env, missing in docs/configuration.md"
    assert documented - env.read == set(), "in docs/configuration.md, never read by Settings.from_env"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"REDIS_SENTINELS": "s:26379"}, "set either REDIS_CLUSTER_NODES (Redis Cluster) or REDIS_SENTINELS"),
        ({"REDIS_URL": "unix:///run/redis.sock"}, "REDIS_URL must be redis:// or rediss://"),
        ({"REDIS_URL": "redis://h:6379/2"}, "only database 0, REDIS_URL names '2'"),
    ],
)
def test_cluster_nodes_refuse_sentinel_a_socket_and_another_database(
    env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(SettingsError, match=r"^REDIS_CLUSTER_NODES: ") as info:
        Settings.from_env({**DEV, "REDIS_CLUSTER_NODES": "redis-0:6379", **env})
    assert fragment in str(info.value)
    for url in ("redis://h:6379", "redis://h:6379/", "rediss://u:p@h:6380/0"):
        s = Settings.from_env({**DEV, "REDIS_CLUSTER_NODES": "redis-0:6379", "REDIS_URL": url})
        assert s.redis_cluster_nodes == (("redis-0", 6379),)


def test_a_service_without_redis_does_not_read_the_redis_variables() -> None:
    env = {**DEV, "REDIS_URL": "not a url", "REDIS_TIMEOUT_SECONDS": "abc", "REDIS_SENTINELS": "x"}
    with pytest.raises(SettingsError, match="REDIS_URL"):
        Settings.from_env(env)
    with pytest.raises(SettingsError, match="REDIS_URL"):
        Settings.from_env(env, service="scheduler")
    s = Settings.from_env(env, service="executor")
    assert s == Settings(grpc_plaintext=True)  # the REDIS_* fields at their defaults


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_reads_its_own_variables_and_no_other(service: str) -> None:
    # A bad value of every variable: each service stops on the first one it reads, and only on
    # one it reads. Read one at a time, every variable refused by a service is one of its own.
    for f, v in variables():
        env = {**DEV, v.name: BAD[v.name]} if v.name in BAD else None
        if env is None:
            continue
        if service in v.readers:
            with pytest.raises(SettingsError, match=f"^{v.name}"):
                Settings.from_env(env, service=service)
        else:
            assert getattr(Settings.from_env(env, service=service), f.name) == getattr(
                Settings(grpc_plaintext=True), f.name
            ), v.name


# A value each variable refuses (strings and ports that are free text have none).
BAD = {name: value for name, value, _ in BAD_VALUES} | {
    "REDIS_SENTINELS": "nohost",
    "REDIS_CLUSTER_NODES": "redis-0:6379,redis-1",
    "EXECUTOR_PREFETCH": "-1",
    "STANDBY_CREDITS": "-1",
    "EXECUTOR_CONCURRENCY": "0",
    "OUTPUT_LIMIT_BYTES": "1",
    "LEASE_SECONDS": "0",
    "BATCH_SIZE": "0",
    "MAX_DELIVERIES": "0",
    "POLL_INTERVAL_SECONDS": "0",
    "MISSED_TOLERANCE_SECONDS": "0",
    "PARTITIONS": "257",
    "PARTITION_LEASE_SECONDS": "0.1",
    "SECRET_KEYS": "not-a-key",
    "AUTH_BOOTSTRAP_TOKEN": "short",
    "HTTP_DENY_NETWORKS": "10.0.0.0/33",
    "HTTP_ALLOW_NETWORKS": "localhost",
}


def test_every_parsed_variable_has_a_bad_value_in_these_tests() -> None:
    free_text = {
        "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD", "REDIS_KEY_PREFIX", "GRPC_HOST",
        "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CA_FILE", "TLS_CLIENT_CA_FILE", "PAGE_TOKEN_SECRET",
        "INSTANCE_ID", "SCHEDULER_ADDR", "EXECUTOR_ADDRS",
        "SMTP_HOST", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_FROM",
    }  # fmt: skip
    assert {v.name for _, v in variables()} - free_text == set(BAD)


def _render(default: object) -> str:
    """A default as docs/configuration.md writes it."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, tuple):
        return ",".join(default)
    return str(default)


def _doc_rows() -> dict[str, tuple[str, str]]:
    """Variable -> (section, default cell) of the services' tables in docs/configuration.md."""
    import pathlib
    import re

    rows: dict[str, tuple[str, str]] = {}
    section = ""
    for line in (pathlib.Path(__file__).parents[2] / "docs" / "configuration.md").read_text().splitlines():
        if line.startswith("#"):
            section = line
        elif line.startswith("| `") and "Dashboard" not in section:
            cells = line.split("|")
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1]):
                rows[name] = (cells[2].strip(), cells[3].strip())
    return rows


def test_docs_give_each_variable_its_default_and_readers() -> None:
    rows = _doc_rows()
    for f, v in variables():
        readers, cell = rows[v.name]
        assert readers == ", ".join(s for s in SERVICES if s in v.readers), v.name
        if f.name == "instance_id":
            assert cell == "`<hostname>-<pid>`"
        elif f.default in ("", ()):
            assert cell.startswith("(empty"), (v.name, cell)
        else:
            assert f"`{_render(f.default)}`" in cell.split(" (")[0], (v.name, cell)


def test_no_service_code_reads_a_setting_it_does_not_parse() -> None:
    # Each service's modules, and the shared ones they import, read only the Settings fields
    # that service parses: a field it does not parse would silently hold its default.
    import inspect
    import pathlib
    import re

    root = pathlib.Path(__file__).parents[2]
    fields = {f.name: v for f, v in variables()}
    methods = {  # Settings methods, and the fields they read
        name: set(re.findall(r"self\.(\w+)", inspect.getsource(getattr(Settings, name)))) & set(fields)
        for name in ("quota", "quota_namespaces")
    }

    def imports(path: pathlib.Path) -> set[pathlib.Path]:
        found = set()
        for module in re.findall(
            r"^(?:from|import) (schedcore[\w.]*|services[\w.]*)", path.read_text(), re.M
        ):
            base = root / module.replace(".", "/")
            found |= {c for c in (base.with_suffix(".py"), base / "__init__.py") if c.exists()}
        return found

    for service in SERVICES:
        todo = set((root / "services" / service).rglob("*.py"))
        seen: set[pathlib.Path] = set()
        while todo:
            path = todo.pop()
            seen.add(path)
            todo |= imports(path) - seen - {root / "schedcore" / "settings.py"}
        read: set[str] = set()
        for path in seen:
            for name in re.findall(r"\bsettings\.(\w+)", path.read_text()):
                read |= methods.get(name, {name} & set(fields))
        unparsed = {name for name in read if service not in fields[name].readers}
        assert unparsed == set(), f"{service} reads {sorted(unparsed)} but does not parse them"


def test_a_partition_lease_must_stay_under_half_the_missed_tolerance() -> None:
    env = {**DEV, "PARTITIONS": "4", "PARTITION_LEASE_SECONDS": "5", "MISSED_TOLERANCE_SECONDS": "10"}
    with pytest.raises(
        SettingsError,
        match=r"PARTITION_LEASE_SECONDS: 5 must be under half of MISSED_TOLERANCE_SECONDS \(10\)",
    ):
        Settings.from_env(env)
    assert Settings.from_env({**env, "PARTITION_LEASE_SECONDS": "4.9"}).partition_lease_s == 4.9
    assert Settings.from_env({**env, "PARTITIONS": "1"}).partition_lease_s == 5  # nothing to share
