"""deploy/k8s and TLS: gRPC over TLS in prod with mTLS between the scheduler and the executor,
plaintext in dev, and one certificate per service (deploy/k8s/cert-manager/certificate.yaml),
each the identity its service is known by: the executor admits only the scheduler's
(EXECUTOR_ALLOWED_CLIENTS, docs/security.md)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from schedcore.settings import Settings
from tests.deploy.manifests import K8S, PRODUCTION, Rendered, render

GRPC_SERVICES = ("api", "scheduler", "executor")
TLS_DIR = "/etc/scheduler-suite/tls"


def secret_of(service: str) -> str:
    return f"scheduler-suite-{service}-tls"


def certificates() -> dict[str, dict[str, Any]]:
    """The cert-manager Certificates of the services, by the Secret each fills."""
    docs = list(yaml.safe_load_all((K8S / "cert-manager" / "certificate.yaml").read_text()))
    found = [d for d in docs if d["kind"] == "Certificate" and not d["spec"].get("isCA")]
    return {d["spec"]["secretName"]: d["spec"] for d in found}


def _tls_volume(m: Rendered, name: str) -> dict:  # type: ignore[type-arg]
    (mount,) = [v for v in m.container(name)["volumeMounts"] if v["mountPath"] == TLS_DIR]
    assert mount["readOnly"] is True and "subPath" not in mount  # subPath mounts never update
    (volume,) = [v for v in m.pod_spec(name)["volumes"] if v["name"] == mount["name"]]
    return volume  # type: ignore[no-any-return]


@pytest.mark.parametrize("overlay", PRODUCTION)
def test_prod_grpc_is_tls_with_mtls_between_scheduler_and_executor(overlay: str) -> None:
    m = render(overlay)
    for name in GRPC_SERVICES:
        env = m.env(name)
        assert "GRPC_PLAINTEXT" not in env
        assert (env["TLS_CERT_FILE"], env["TLS_KEY_FILE"], env["TLS_CA_FILE"]) == (
            f"{TLS_DIR}/tls.crt",
            f"{TLS_DIR}/tls.key",
            f"{TLS_DIR}/ca.crt",
        )
        volume = _tls_volume(m, name)
        assert volume["secret"]["secretName"] == secret_of(name)  # its own certificate, no other's
        assert "items" not in volume["secret"]  # tls.crt, tls.key and ca.crt
        # mTLS where both ends are ours; the api's clients (ui, schedctl) carry tokens instead.
        assert ("TLS_CLIENT_CA_FILE" in env) == (name != "api")
        Settings.from_env({k: v for k, v in env.items() if v is not None})  # a configuration that starts
    ui = m.env("ui")
    assert ui["TLS_CA_FILE"] == f"{TLS_DIR}/ca.crt" and "GRPC_PLAINTEXT" not in ui
    ui_secret = _tls_volume(m, "ui")["secret"]
    assert ui_secret["secretName"] == secret_of("api")
    assert ui_secret["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # the CA only, no key


def test_dev_runs_plaintext_without_the_certificate_secrets() -> None:
    m = render("dev")
    for name in (*GRPC_SERVICES, "ui"):
        env = m.env(name)
        assert env["GRPC_PLAINTEXT"] == "true"
        assert not [k for k in env if k.startswith("TLS_")], name
        assert "-tls" not in str(m.pod_spec(name)), name
        if name != "ui":
            assert Settings.from_env({k: v for k, v in env.items() if v is not None}).grpc_plaintext


@pytest.mark.parametrize("overlay", PRODUCTION)
def test_one_certificate_per_service_naming_what_its_clients_dial(overlay: str) -> None:
    certs = certificates()
    assert set(certs) == {secret_of(name) for name in GRPC_SERVICES}
    m = render(overlay)
    dialled = {
        "executor": m.env("scheduler")["EXECUTOR_ADDRS"],
        "scheduler": m.env("executor")["SCHEDULER_ADDR"],
        "api": m.env("ui")["API_ADDR"],
    }
    for service, address in dialled.items():
        host = str(address).removeprefix("dns:///").rsplit(":", 1)[0]
        cert = certs[secret_of(service)]
        assert host in cert["dnsNames"], (service, host)
        assert cert["commonName"] == service
        assert "server auth" in cert["usages"]
    # The scheduler and the executor present theirs as clients too (mTLS); the api dials nobody.
    for name in ("scheduler", "executor"):
        assert "client auth" in certs[secret_of(name)]["usages"], name
    assert certs[secret_of("api")]["usages"] == ["server auth"]


@pytest.mark.parametrize("overlay", PRODUCTION)
def test_the_executor_admits_only_the_schedulers_certificate(overlay: str) -> None:
    m = render(overlay)
    env = m.env("executor")
    assert env["EXECUTOR_ALLOWED_CLIENTS"] == "scheduler"  # said on the Deployment, not left implicit
    allowed = set(Settings.from_env({k: v for k, v in env.items() if v is not None}).executor_allowed_clients)
    for name, cert in certificates().items():
        # A certificate with SANs is known by them alone; its CN is never looked at.
        admitted = bool(allowed & set(cert["dnsNames"]))
        assert admitted == (name == secret_of("scheduler")), name
