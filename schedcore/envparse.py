"""The parsers of the settings table (schedcore.settings), plus the bounds they check.

Every parser has one signature, `parse(env, name, default) -> value`: it reads the variable
`name` from `env`, returns `default` when it is unset or blank, and raises SettingsError naming
the variable when its value cannot be used. Parsers that need bounds or choices are made by a
factory (`number(low, high)`, `choice(...)`, `overrides(high)`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias
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


Env: TypeAlias = Mapping[str, str]
Parser: TypeAlias = Callable[[Env, str, Any], Any]


def text(env: Env, name: str, default: str) -> str:
    """The trimmed value; unset or blank: the default."""
    raw = env.get(name)
    return default if raw is None or raw.strip() == "" else raw.strip()


def number(low: float, high: float) -> Parser:
    """An int or a float (the type of the default) from `low` to `high`."""

    def parse(env: Env, name: str, default: Any) -> Any:
        raw = text(env, name, "")
        if not raw:
            return default
        kind = type(default)
        try:
            value = kind(raw)
        except ValueError:
            raise SettingsError(
                f"{name}: expected {'an integer' if kind is int else 'a number'}, got {raw!r}"
            ) from None
        if not low <= value <= high:  # also rejects NaN
            raise SettingsError(f"{name}: must be between {kind(low)} and {kind(high)}, got {value}")
        return value

    return parse


def choice(*choices: str) -> Parser:
    """One of `choices`, in any case, returned as spelled there."""

    def parse(env: Env, name: str, default: str) -> str:
        raw = text(env, name, default)
        for known in choices:
            if raw.lower() == known.lower():
                return known
        shown = raw.upper() if all(c.isupper() for c in choices) else raw.lower()
        raise SettingsError(f"{name}: must be one of {', '.join(choices)}, got {shown!r}")

    return parse


def parse_bool(env: Env, name: str, default: bool) -> bool:
    """true/1/yes/on or false/0/no/off, in any case: the one boolean parser (services, ui, cli)."""
    raw = text(env, name, "true" if default else "false").lower()
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


def redis_url(env: Env, name: str, default: str) -> str:
    url = text(env, name, default)
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
            f"{name}: expected redis://[user:password@]host:port/db, rediss://... or "
            f"unix:///path, got {url!r}"
        )
    return url


def web_url(env: Env, name: str, default: str) -> str:
    """An http:// or https:// address with a host (a link others will follow), or ""."""
    url = text(env, name, default)
    if not url:
        return url
    try:
        parsed = urlparse(url)
        ok = (
            parsed.scheme in ("http", "https")
            and bool(parsed.hostname)
            and (parsed.port is None or parsed.port > 0)
        )
    except ValueError:
        ok = False
    if not ok:
        raise SettingsError(f"{name}: expected http(s)://host[:port][/path], got {url!r}")
    return url


def sentinels(env: Env, name: str, default: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """host:port[,host:port...]. That REDIS_URL is not unix:// with them is Settings' check."""
    raw = text(env, name, "")
    if not raw:
        return default
    found: list[tuple[str, int]] = []
    for entry in raw.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{name}: expected host:port[,host:port...], got {raw!r}")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def networks(env: Env, name: str, default: str) -> str:
    """Comma-separated networks; blank means the default, `none` means no network."""
    value = text(env, name, default)
    if value.lower() == "none":
        return ""
    try:
        parse_networks(value)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None
    return value


def bearer_secret(env: Env, name: str, default: str) -> str:
    value = text(env, name, default)
    usable = MIN_BOOTSTRAP_TOKEN <= len(value) <= MAX_BEARER and value.isprintable() and " " not in value
    if value and not usable:
        # Never echo the value: it is a secret.
        raise SettingsError(
            f"{name}: must be {MIN_BOOTSTRAP_TOKEN}-{MAX_BEARER} printable characters "
            f"without spaces (got {len(value)} characters)"
        )
    return value


def fernet_keys(env: Env, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in text(env, name, "").split(",") if k.strip())
    for i, key in enumerate(keys, 1):
        try:
            check_key(key)
        except ValueError:
            # Never echo the value: it is a secret.
            raise SettingsError(
                f"{name}: key {i} of {len(keys)} is not a Fernet key (32 bytes, URL-safe base64; "
                'make one with: python -c "from schedcore.sealing import new_key; print(new_key())")'
            ) from None
    return keys or default


# EXECUTOR_ALLOWED_CLIENTS: the scheduler's name in the manifests (deploy/k8s), and the word
# that lets any client of the CA in.
DEFAULT_ALLOWED_CLIENTS = ("scheduler",)
ANY_CLIENT = "*"


def client_names(env: Env, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = text(env, name, "")
    if not raw:
        return default
    names = tuple(part.strip() for part in raw.split(","))
    if any(not part or not part.isprintable() for part in names):
        raise SettingsError(
            f"{name}: expected name[,name...] (certificate SAN or CN) or {ANY_CLIENT}, got {raw!r}"
        )
    if ANY_CLIENT in names and len(names) > 1:
        raise SettingsError(f"{name}: {ANY_CLIENT} (any client) stands alone, got {raw!r}")
    return names


def user(env: Env, name: str, default: str) -> str:
    """A user name or uid[:gid]; whether it exists is checked by the executor that uses it."""
    value = text(env, name, default)
    if value and not re.fullmatch(r"\d+(:\d+)?|[A-Za-z_][A-Za-z0-9_.-]*\$?", value):
        raise SettingsError(f"{name}: expected a user name or uid[:gid], got {value!r}")
    return value


def overrides(high: int) -> Parser:
    """`namespace=N[,namespace=N...]`: per-namespace values of a limit, N from 0 to `high`."""

    def parse(env: Env, name: str, default: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
        found: dict[str, int] = dict(default)
        for entry in (e.strip() for e in text(env, name, "").split(",") if e.strip()):
            namespace, _, value = entry.partition("=")
            namespace, value = namespace.strip(), value.strip()
            if not NAMESPACE.match(namespace) or not value.isdigit() or int(value) > high:
                raise SettingsError(
                    f"{name}: expected namespace=N[,namespace=N...] with N from 0 to {high}, got {entry!r}"
                )
            found[namespace] = int(value)
        return tuple(sorted(found.items()))

    return parse
