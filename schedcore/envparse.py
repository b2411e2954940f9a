"""The parsers behind Settings.from_env (schedcore.settings): each reads one environment variable
and raises SettingsError naming it when its value cannot be used, plus the bounds they check."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlparse

from schedcore.netpolicy import parse_networks
from schedcore.sealing import check_key

# AUTH_MODE: `token` (every public call needs a bearer token) or `none` (development only).
AUTH_MODES = ("token", "none")
# Shortest AUTH_BOOTSTRAP_TOKEN accepted, and longest bearer token the api reads.
MIN_BOOTSTRAP_TOKEN = 32
MAX_BEARER = 512
# Largest gRPC message a service sends or receives, and that the clients (schedctl, the ui, the
# services' own channels) accept: schedcore/server.py and schedcore/channels.py.
GRPC_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# LIST_PAGE_MAX_BYTES: its default and its bounds (under the send limit, with room to spare).
DEFAULT_LIST_PAGE_BYTES = 4 * 1024 * 1024
LIST_PAGE_BYTES_RANGE = (64 * 1024, GRPC_MAX_MESSAGE_BYTES - 1024 * 1024)
# A namespace (a DNS label): schedcore.store.keys.NAMESPACE, which this module cannot import
# (schedcore.store loads redis, which the executor never does); tests/unit/test_settings.py
# checks the two agree.
NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# Largest value of a quota setting: of a count, of bytes (1 TiB).
MAX_QUOTA = 1_000_000_000
MAX_BYTES_QUOTA = 1 << 40


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, default: N, low: N, high: N) -> N:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    kind = type(default)
    try:
        value = kind(raw.strip())
    except ValueError:
        raise SettingsError(
            f"{name}: expected {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None
    if not low <= value <= high:  # also rejects NaN
        raise SettingsError(f"{name}: must be between {low} and {high}, got {value}")
    return value


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name)
    return default if raw is None or raw.strip() == "" else raw.strip()


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _str(env, name, default).upper()
    if value not in choices:
        raise SettingsError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def parse_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _str(env, name, "true" if default else "false").lower()
    if raw in ("true", "1", "yes", "on"):
        return True
    if raw in ("false", "0", "no", "off"):
        return False
    raise SettingsError(f"{name}: expected true or false, got {raw!r}")


TLS_FILE_VARIABLES = ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CA_FILE", "TLS_CLIENT_CA_FILE")


def check_tls(plaintext: bool, files: Mapping[str, str]) -> None:
    """GRPC_PLAINTEXT=true, or a certificate and its key; never both (a forgotten
    GRPC_PLAINTEXT must not silently turn TLS off). Whether the files can be read and hold a
    usable certificate and key is checked when the server starts (schedcore.tls)."""
    given = [name for name in TLS_FILE_VARIABLES if files.get(name)]
    if plaintext:
        if given:
            raise SettingsError(f"GRPC_PLAINTEXT=true and {', '.join(given)} are both set: choose one")
        return
    if bool(files.get("TLS_CERT_FILE")) != bool(files.get("TLS_KEY_FILE")):
        raise SettingsError("TLS_CERT_FILE and TLS_KEY_FILE: set both (a certificate and its key) or neither")
    if not files.get("TLS_CERT_FILE"):
        raise SettingsError(
            "TLS_CERT_FILE and TLS_KEY_FILE are not set: gRPC needs a certificate and its key "
            "(docs/security.md), or GRPC_PLAINTEXT=true for local development"
        )


def _redis_url(env: Mapping[str, str]) -> str:
    url = _str(env, "REDIS_URL", "redis://localhost:6379/0")
    try:
        parsed = urlparse(url)
        port_ok = parsed.port is None or parsed.port > 0
    except ValueError:  # a malformed IPv6 host, a port that is not a number or out of range
        parsed, port_ok = urlparse(""), False
    if (
        parsed.scheme not in ("redis", "rediss", "unix")
        or (parsed.scheme != "unix" and not parsed.hostname)
        or not port_ok
    ):
        raise SettingsError(
            f"REDIS_URL: expected redis://[user:password@]host:port/db, rediss://... or "
            f"unix:///path, got {url!r}"
        )
    return url


def _sentinels(env: Mapping[str, str], redis_url: str) -> tuple[tuple[str, int], ...]:
    raw = _str(env, "REDIS_SENTINELS", "")
    if not raw:
        return ()
    found: list[tuple[str, int]] = []
    for entry in raw.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"REDIS_SENTINELS: expected host:port[,host:port...], got {raw!r}")
        found.append((host.strip("[]"), int(port)))
    if redis_url.startswith("unix:"):
        raise SettingsError("REDIS_SENTINELS: REDIS_URL must be redis:// or rediss:// with Sentinel")
    return tuple(found)


def _redis(env: Mapping[str, str]) -> dict[str, Any]:
    """The REDIS_* variables, as Settings fields (only the services that use Redis read them)."""
    url = _redis_url(env)
    return {
        "redis_url": url,
        "redis_sentinels": _sentinels(env, url),
        "redis_sentinel_master": _str(env, "REDIS_SENTINEL_MASTER", "mymaster"),
        "redis_sentinel_password": _str(env, "REDIS_SENTINEL_PASSWORD", ""),
        "redis_key_prefix": _str(env, "REDIS_KEY_PREFIX", "ts"),
        "redis_timeout_s": _number(env, "REDIS_TIMEOUT_SECONDS", 5.0, 0.05, 300.0),
    }


def _networks(env: Mapping[str, str], name: str, default: str) -> str:
    """Comma-separated networks; blank means the default, `none` means no network."""
    value = _str(env, name, default)
    if value.lower() == "none":
        return ""
    try:
        parse_networks(value)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None
    return value


def _auth_mode(env: Mapping[str, str]) -> str:
    value = _str(env, "AUTH_MODE", "token").lower()
    if value not in AUTH_MODES:
        raise SettingsError(f"AUTH_MODE: must be one of {', '.join(AUTH_MODES)}, got {value!r}")
    return value


def _bootstrap_token(env: Mapping[str, str]) -> str:
    value = _str(env, "AUTH_BOOTSTRAP_TOKEN", "")
    usable = MIN_BOOTSTRAP_TOKEN <= len(value) <= MAX_BEARER and value.isprintable() and " " not in value
    if value and not usable:
        # Never echo the value: it is a secret.
        raise SettingsError(
            f"AUTH_BOOTSTRAP_TOKEN: must be {MIN_BOOTSTRAP_TOKEN}-{MAX_BEARER} printable characters "
            f"without spaces (got {len(value)} characters)"
        )
    return value


def _secret_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in _str(env, "SECRET_KEYS", "").split(",") if k.strip())
    for i, key in enumerate(keys, 1):
        try:
            check_key(key)
        except ValueError:
            # Never echo the value: it is a secret.
            raise SettingsError(
                f"SECRET_KEYS: key {i} of {len(keys)} is not a Fernet key (32 bytes, URL-safe base64; "
                'make one with: python -c "from schedcore.sealing import new_key; print(new_key())")'
            ) from None
    return keys


# EXECUTOR_ALLOWED_CLIENTS: the scheduler's name in the manifests (deploy/k8s), and the word
# that lets any client of the CA in.
DEFAULT_ALLOWED_CLIENTS = ("scheduler",)
ANY_CLIENT = "*"


def _allowed_clients(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = _str(env, "EXECUTOR_ALLOWED_CLIENTS", ",".join(DEFAULT_ALLOWED_CLIENTS))
    names = tuple(name.strip() for name in raw.split(","))
    if any(not name or not name.isprintable() for name in names):
        raise SettingsError(
            f"EXECUTOR_ALLOWED_CLIENTS: expected name[,name...] (certificate SAN or CN) or {ANY_CLIENT}, "
            f"got {raw!r}"
        )
    if ANY_CLIENT in names and len(names) > 1:
        raise SettingsError(f"EXECUTOR_ALLOWED_CLIENTS: {ANY_CLIENT} (any client) stands alone, got {raw!r}")
    return names


def _command_user(env: Mapping[str, str]) -> str:
    """A user name or uid[:gid]; whether it exists is checked by the executor that uses it."""
    value = _str(env, "EXECUTOR_COMMAND_USER", "")
    if value and not re.fullmatch(r"\d+(:\d+)?|[A-Za-z_][A-Za-z0-9_.-]*\$?", value):
        raise SettingsError(f"EXECUTOR_COMMAND_USER: expected a user name or uid[:gid], got {value!r}")
    return value


def _overrides(env: Mapping[str, str], name: str, high: int) -> tuple[tuple[str, int], ...]:
    """`namespace=N[,namespace=N...]`: per-namespace values of a limit."""
    raw = _str(env, name, "")
    found: dict[str, int] = {}
    for entry in (e.strip() for e in raw.split(",") if e.strip()):
        namespace, _, value = entry.partition("=")
        namespace, value = namespace.strip(), value.strip()
        if not NAMESPACE.match(namespace) or not value.isdigit() or int(value) > high:
            raise SettingsError(
                f"{name}: expected namespace=N[,namespace=N...] with N from 0 to {high}, got {entry!r}"
            )
        found[namespace] = int(value)
    return tuple(sorted(found.items()))
