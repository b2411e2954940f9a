"""Real certificates for the TLS tests: a throwaway CA (trustme) that issues server and client
certificates into PEM files, and the environment that makes a service use them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

from schedcore.channels import ChannelSecurity

# What every service certificate names: the tests dial 127.0.0.1 and localhost.
HOSTS = ("127.0.0.1", "localhost")


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

    def issue(self, *hosts: str) -> Issued:
        """A certificate for `hosts` (default HOSTS); good for server and client authentication."""
        self._count += 1
        leaf = self.ca.issue_cert(*(hosts or HOSTS))
        issued = Issued(self.folder / f"{self._count}.crt", self.folder / f"{self._count}.key")
        leaf.cert_chain_pems[0].write_to_path(str(issued.cert))
        for extra in leaf.cert_chain_pems[1:]:
            extra.write_to_path(str(issued.cert), append=True)
        leaf.private_key_pem.write_to_path(str(issued.key))
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
