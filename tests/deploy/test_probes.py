"""The probes of deploy/k8s work against a TLS service: a service started with its prod
environment (certificates of a test CA where the Secret would be mounted) answers the kubelet's
grpc probe (plaintext Health/Check) on HEALTH_PORT, and that port serves nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schedcore.channels import ChannelSecurity, channel
from schedcore.server import LIVENESS_SERVICE
from tests.deploy.manifests import ROOT, render
from tests.support import RedisServer, free_port, wait_for
from tests.tls_support import Pki

TLS_DIR = "/etc/scheduler-suite/tls"
SERVING = health_pb2.HealthCheckResponse.SERVING


def kubelet_probe(port: int, service: str) -> int:
    """What `grpc: {port, service}` does: a plaintext Health/Check, no credentials."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(ch).Check(request, timeout=2).status


@pytest.mark.parametrize("name", ["api", "executor"])
def test_kubelet_grpc_probes_reach_a_tls_service_on_its_health_port(
    name: str, tmp_path: Path, redis_srv: RedisServer
) -> None:
    m = render("prod")
    container = m.container(name)
    pki = Pki(tmp_path)
    issued = pki.issue()
    files = {
        f"{TLS_DIR}/tls.crt": str(issued.cert),
        f"{TLS_DIR}/tls.key": str(issued.key),
        f"{TLS_DIR}/ca.crt": str(pki.ca_file),
    }
    env = {k: files.get(v, v) for k, v in m.env(name).items() if v is not None}
    assert env["HEALTH_PORT"] == str(container["readinessProbe"]["grpc"]["port"])
    port, health_port = free_port(), free_port()
    env.update(
        PATH="/usr/bin:/bin",
        GRPC_HOST="127.0.0.1",
        GRPC_PORT=str(port),
        HEALTH_PORT=str(health_port),
        METRICS_PORT="0",
        REDIS_URL=redis_srv.url,  # a Secret's value in the cluster
        EXECUTOR_ADDRS=f"127.0.0.1:{free_port()}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", f"services.{name}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return kubelet_probe(health_port, "") == SERVING
            except grpc.RpcError:
                return False

        wait_for(ready, timeout=30, interval=0.1)
        assert kubelet_probe(health_port, LIVENESS_SERVICE) == SERVING
        # The gRPC port itself speaks TLS only: the same probe there fails, a client with the CA works.
        with pytest.raises(grpc.RpcError):
            kubelet_probe(port, "")
        with channel(
            f"127.0.0.1:{port}",
            ChannelSecurity(False, str(pki.ca_file), *map(str, (issued.cert, issued.key))),
        ) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == SERVING
        # The health port serves the health service and nothing else.
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as ch:
            for version in ("v1", "v1alpha"):
                with pytest.raises(grpc.RpcError) as info:
                    ch.unary_unary(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo")(
                        b"", timeout=2
                    )
                assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        proc.terminate()
        proc.wait(20)
