"""TLS material from PEM files: the server credentials of every gRPC service, reloaded when the
files change, and the checks that turn an unreadable or unusable file into a SettingsError.

Kubernetes updates a mounted Secret in place (cert-manager renews the certificate, the kubelet
swaps the files), so the server asks for its certificate on every new connection (gRPC's
dynamic_ssl_server_credentials) and reads the files again when their stat changed. Connections
already open keep the certificate they were opened with.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading

import grpc

from schedcore.settings import Settings, SettingsError, check_tls

log = logging.getLogger("schedcore.tls")


def tls_files(settings: Settings) -> dict[str, str]:
    return {
        "TLS_CERT_FILE": settings.tls_cert_file,
        "TLS_KEY_FILE": settings.tls_key_file,
        "TLS_CA_FILE": settings.tls_ca_file,
        "TLS_CLIENT_CA_FILE": settings.tls_client_ca_file,
    }


def read_pem(path: str, variable: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise SettingsError(f"{variable}: {path!r} holds no PEM data")
    return data


def check_ca(path: str, variable: str) -> bytes:
    """The CA bundle at `path`, checked to hold at least one certificate."""
    data = read_pem(path, variable)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, ValueError) as exc:
        raise SettingsError(f"{variable}: {path!r} holds no usable CA certificate: {exc}") from None
    return data


def check_key_pair(
    cert_path: str, key_path: str, names: tuple[str, str] = ("TLS_CERT_FILE", "TLS_KEY_FILE")
) -> tuple[bytes, bytes]:
    """The certificate chain and its key, checked to be PEM that belong together. `names`: what
    the messages call the two (variables, or schedctl's flags)."""
    cert = read_pem(cert_path, names[0])
    key = read_pem(key_path, names[1])
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, ValueError) as exc:
        raise SettingsError(
            f"{names[0]} / {names[1]}: {cert_path!r} and {key_path!r} are not a usable "
            f"certificate and key: {exc}"
        ) from None
    return cert, key


class ServerCertificates:
    """The server's certificate configuration, read from the files again when they change."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self._failed_stamp: tuple[tuple[int, int, int], ...] | None = None
        self.initial = self._load()  # raises SettingsError: the service does not start
        self.reloads = 0

    def _paths(self) -> list[str]:
        return [p for p in (self.cert_file, self.key_file, self.client_ca_file) if p]

    def _files_stamp(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self._paths():
            try:
                st = os.stat(path)  # follows the symbolic links a mounted Secret is made of
            except OSError:
                stamps.append((0, 0, 0))
                continue
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert, key = check_key_pair(self.cert_file, self.key_file)
        client_ca = check_ca(self.client_ca_file, "TLS_CLIENT_CA_FILE") if self.client_ca_file else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's callback, on each new connection: a new configuration, or None for "unchanged".

        Files caught half-written keep the old certificate in use; they are tried again once
        they change again."""
        with self._lock:
            stamp = self._files_stamp()
            if stamp == self._stamp or stamp == self._failed_stamp:
                return None
            try:
                config = self._load()
            except SettingsError as exc:
                self._failed_stamp = stamp
                log.warning("new certificate files not usable, keeping the current ones: %s", exc)
                return None
            self._stamp, self._failed_stamp = stamp, None
            self.reloads += 1
            log.info("certificate files changed: new connections get the new certificate")
            return config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.initial, self.fetch, require_client_authentication=bool(self.client_ca_file)
        )


def server_certificates(settings: Settings) -> ServerCertificates | None:
    """None in plaintext mode; otherwise the checked files (SettingsError if unusable)."""
    check_tls(settings.grpc_plaintext, tls_files(settings))
    if settings.grpc_plaintext:
        return None
    if settings.tls_ca_file:  # for the channels this service opens: checked at start too
        check_ca(settings.tls_ca_file, "TLS_CA_FILE")
    return ServerCertificates(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
