"""Rendering deploy/k8s overlays with the real kustomize (kubectl's) and reading the result."""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
# The Kubernetes version the manifests are validated against (kubectl's, tools/fetch_kubectl.py).
KUBERNETES_VERSION = "1.32.0"
# The suite's workloads: one Deployment each, and Redis.
SERVICES = ("api", "scheduler", "executor", "ui")
WORKLOADS = (*SERVICES, "redis")
# Overlays built on prod (TLS, autoscaled, spread over nodes), and those whose Redis is outside the
# tree: an external Redis Cluster (components/redis-cluster), so no StatefulSet redis.
PRODUCTION = ("cluster", "prod")
EXTERNAL_REDIS = ("cluster",)
NAMESPACES = {"cluster": "scheduler-suite", "dev": "scheduler-suite-dev", "prod": "scheduler-suite"}


def workloads(overlay: str) -> tuple[str, ...]:
    """The workloads an overlay runs: the services, and Redis unless it is external."""
    return SERVICES if overlay in EXTERNAL_REDIS else WORKLOADS


Doc = dict[str, Any]


def kubectl() -> str:
    path = os.environ.get("KUBECTL") or str(ROOT / ".tools" / "kubectl")
    if not Path(path).exists():
        raise RuntimeError(f"{path} not found: run `make tools` (tools/fetch_kubectl.py) or set KUBECTL")
    return path


@functools.cache
def render_text(overlay: str) -> str:
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"kubectl kustomize {overlay} failed:\n{out.stderr}"
    return out.stdout


@dataclass(frozen=True)
class Rendered:
    docs: list[Doc]

    def all(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> Doc:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
        return found[0]

    def workload(self, name: str) -> Doc:
        return self.get("StatefulSet" if name == "redis" else "Deployment", name)

    def pod_template(self, name: str) -> Doc:
        template: Doc = self.workload(name)["spec"]["template"]
        return template

    def pod_spec(self, name: str) -> Doc:
        spec: Doc = self.workload(name)["spec"]["template"]["spec"]
        return spec

    def container(self, name: str) -> Doc:
        (container,) = [c for c in self.pod_spec(name)["containers"] if c["name"] == name]
        return container

    def pod_labels(self, name: str) -> dict[str, str]:
        labels: dict[str, str] = self.workload(name)["spec"]["template"]["metadata"]["labels"]
        return labels

    def env(self, name: str) -> dict[str, str | None]:
        """The container's environment as Kubernetes builds it: envFrom first, env over it.
        A value from a ConfigMap key is that key's; from a Secret or the downward API, None
        (what matters is that it is set). An optional envFrom source (one the operator may add)
        contributes nothing."""
        out: dict[str, str | None] = {}
        for source in self.container(name).get("envFrom", []):
            ((_, target),) = source.items()
            if target.get("optional"):  # an object the operator may create: the tree has none
                continue
            if "configMapRef" in source:
                data = self.get("ConfigMap", source["configMapRef"]["name"]).get("data", {})
                out.update({k: str(v) for k, v in data.items()})
            else:
                secret = self.get("Secret", source["secretRef"]["name"])
                out.update(dict.fromkeys(secret.get("stringData", {}) | secret.get("data", {})))
        for var in self.container(name).get("env", []):
            ref = var.get("valueFrom", {}).get("configMapKeyRef")
            if ref is not None:  # a missing key is None: test_k8s checks that every one resolves
                data = self.get("ConfigMap", ref["name"]).get("data", {})
                out[var["name"]] = str(data[ref["key"]]) if ref["key"] in data else None
            else:
                out[var["name"]] = var.get("value") if "valueFrom" not in var else None
        return out


@functools.cache
def render(overlay: str) -> Rendered:
    return Rendered([d for d in yaml.safe_load_all(render_text(overlay)) if d])
