"""The one way a gRPC channel is made: scheduler -> executor, executor -> scheduler, the ui and
schedctl -> api, and `make run`'s health checks.

TLS unless plaintext was asked for: the server is checked against `ca_file` (empty: gRPC's
default roots) and, when `cert_file` and `key_file` are set, the channel presents that
certificate (mTLS). The files are read when the channel is made, so a channel made after a
certificate was renewed presents the new one.

Every channel accepts messages as large as a server may send (GRPC_MAX_MESSAGE_BYTES, not gRPC's
default of 4 MiB), so a List page that LIST_PAGE_MAX_BYTES lets past 4 MiB still arrives; a
channel to the api (API_OPTIONS) also retries the calls that only read on UNAVAILABLE.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from schedcore import pb
from schedcore.settings import GRPC_MAX_MESSAGE_BYTES, Settings, SettingsError
from schedcore.tls import check_ca, check_key_pair

Options = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class ChannelSecurity:
    plaintext: bool
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    # What error messages call the three files: the services' variables, or schedctl's flags.
    names: tuple[str, str, str] = ("TLS_CA_FILE", "TLS_CERT_FILE", "TLS_KEY_FILE")

    @classmethod
    def from_settings(cls, settings: Settings) -> ChannelSecurity:
        """A service's own: its TLS_CA_FILE, and its certificate as client certificate."""
        s = settings
        return cls(s.grpc_plaintext, s.tls_ca_file, s.tls_cert_file, s.tls_key_file)

    @classmethod
    def for_client(
        cls,
        plaintext: bool,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        names: tuple[str, str, str] = ("TLS_CA_FILE", "TLS_CERT_FILE", "TLS_KEY_FILE"),
        plaintext_name: str = "GRPC_PLAINTEXT",
    ) -> ChannelSecurity:
        """A client's (ui, schedctl): plaintext only when asked, never together with TLS files."""
        given = [name for name, path in zip(names, (ca_file, cert_file, key_file), strict=True) if path]
        if plaintext and given:
            raise SettingsError(f"{plaintext_name} and {', '.join(given)} are both given: choose one")
        if bool(cert_file) != bool(key_file):
            raise SettingsError(
                f"{names[1]} and {names[2]}: give both (a certificate and its key) or neither"
            )
        return cls(plaintext, ca_file, cert_file, key_file, names)

    def check(self) -> None:
        """Reads the files now (SettingsError naming the problem), as a service does at start."""
        self.credentials()

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.plaintext:
            return None
        root = check_ca(self.ca_file, self.names[0]) if self.ca_file else None
        key = cert = None
        if self.cert_file:
            cert, key = check_key_pair(self.cert_file, self.key_file, (self.names[1], self.names[2]))
        return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)


def _options(options: Options) -> list[tuple[str, Any]]:
    """The caller's options, with the receive limit unless they set one."""
    out = list(options)
    if all(name != "grpc.max_receive_message_length" for name, _ in out):
        out.append(("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES))
    return out


def _tls_options(target: str, options: Options, server_name: str) -> list[tuple[str, Any]]:
    """The name the server's certificate is checked against, where gRPC's own choice is wrong:
    a target given as an address found under a name (the scheduler dials each executor pod by
    its IP; the certificate names the host EXECUTOR_ADDRS gave), and an `ipv4:a:p,b:p` list,
    whose authority would be the whole list (its first host is used)."""
    if not server_name and target.startswith(("ipv4:", "ipv6:")):
        first = target.split(":", 1)[1].split(",")[0]
        server_name = first.rsplit(":", 1)[0].strip("[]")
    out = _options(options)
    if server_name:
        out.append(("grpc.ssl_target_name_override", server_name))
    return out


# Calls to the api that only read, by their names' first word: a client retries them by itself on
# UNAVAILABLE (an api replica restarting, a connection reset by a rollout), as gRPC's retry
# policy does it (A6: backoff with jitter, bounded attempts). Calls that write are not retried
# here: CreateTask's request_id and the etags make a retry by the caller safe, not a blind one.
READ_CALLS = ("Get", "List", "Preview", "WhoAmI")
API_SERVICES = (
    pb.task_service_pb2.DESCRIPTOR.services_by_name["TaskService"],
    pb.auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"],
    pb.audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"],
    pb.alert_service_pb2.DESCRIPTOR.services_by_name["AlertService"],
)
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.2s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def api_service_config() -> str:
    """The gRPC service config of a channel to the api: retry policy of the read calls."""
    reads = [
        {"service": service.full_name, "method": method.name}
        for service in API_SERVICES
        for method in service.methods
        if method.name.startswith(READ_CALLS)
    ]
    return json.dumps({"methodConfig": [{"name": reads, "retryPolicy": RETRY_POLICY}]})


# The options of every client channel to the api (schedctl, the dashboard).
API_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.enable_retries", 1),
    ("grpc.service_config", api_service_config()),
)


def aio_channel(
    target: str, security: ChannelSecurity, options: Options = (), *, server_name: str = ""
) -> grpc.aio.Channel:
    creds = security.credentials()
    if creds is None:
        return grpc.aio.insecure_channel(target, options=_options(options))
    return grpc.aio.secure_channel(target, creds, options=_tls_options(target, options, server_name))


def channel(target: str, security: ChannelSecurity, options: Options = ()) -> grpc.Channel:
    creds = security.credentials()
    if creds is None:
        return grpc.insecure_channel(target, options=_options(options))
    return grpc.secure_channel(target, creds, options=_tls_options(target, options, ""))
