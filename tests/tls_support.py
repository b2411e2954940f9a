"""Real certificates for the TLS tests: a throwaway CA (trustme) that issues server and client
certificates into PEM files, and the environment that makes a service use them.

As the manifests do, each service gets a certificate of its own (`service`): its name as a SAN
(what the executor checks a scheduler's identity against, EXECUTOR_ALLOWED_CLIENTS) and as the
subject CN, plus HOSTS, the addresses the tests dial."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from schedcore.channels import ChannelSecurity

# What every service certificate names: the tests dial 127.0.0.1 and localhost.
HOSTS = ("127.0.0.1", "localhost")
# The services of a deployment, each with its own certificate; "client" stands for schedctl or
# any other caller that holds a certificate of the CA.
SERVICES = ("api", "scheduler", "executor", "client")


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class Pki:
    """One CA and the files of what it issued, in `folder`."""

    def __init__(self, folder: Path, name: str = "ca") -> None:
        self.folder = folder / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name=f"scheduler-suite test {name}")
        self.ca_file = self.folder / "ca.crt"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self._count = 0

    def _files(self) -> Issued:
        self._count += 1
        return Issued(self.folder / f"{self._count}.crt", self.folder / f"{self._count}.key")

    def issue(self, *hosts: str, common_name: str | None = None) -> Issued:
        """A certificate for `hosts` (default HOSTS); good for server and client authentication."""
        leaf = self.ca.issue_cert(*(hosts or HOSTS), common_name=common_name)
        issued = self._files()
        leaf.cert_chain_pems[0].write_to_path(str(issued.cert))
        for extra in leaf.cert_chain_pems[1:]:
            extra.write_to_path(str(issued.cert), append=True)
        leaf.private_key_pem.write_to_path(str(issued.key))
        return issued

    def service(self, name: str) -> Issued:
        """The certificate of service `name` (SERVICES): SAN DNS:name plus HOSTS, CN=name."""
        return self.issue(name, *HOSTS, common_name=name)

    def without_san(self, common_name: str) -> Issued:
        """A client certificate of this CA naming only a subject CN: no subjectAltName at all,
        as hand-made certificates (openssl req -subj /CN=...) often are."""
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        issued = self._files()
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return issued

    def server_env(self, issued: Issued, *, mtls: bool = False) -> dict[str, str]:
        """A service's variables: its certificate, this CA for its peers, and (mTLS) for clients."""
        env = {
            "GRPC_PLAINTEXT": "false",
            "TLS_CERT_FILE": str(issued.cert),
            "TLS_KEY_FILE": str(issued.key),
            "TLS_CA_FILE": str(self.ca_file),
        }
        if mtls:
            env["TLS_CLIENT_CA_FILE"] = str(self.ca_file)
        return env

    def client(self, issued: Issued | None = None) -> ChannelSecurity:
        """A channel that trusts this CA and, given `issued`, presents that certificate."""
        if issued is None:
            return ChannelSecurity(False, str(self.ca_file))
        return ChannelSecurity(False, str(self.ca_file), str(issued.cert), str(issued.key))
