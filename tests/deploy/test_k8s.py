"""deploy/k8s: every overlay renders with kustomize and validates against the Kubernetes schemas,
and every workload follows the deployment policies (docs/deploy.md)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from schedcore.server import DRAINED_STOP_S, LIVENESS_SERVICE
from services.executor.app import REPORT_FLUSH_S
from services.executor.core import CANCEL_WAIT_S, FLUSH_WAIT_S
from tests.deploy.manifests import (
    EXTERNAL_REDIS,
    KUBERNETES_VERSION,
    NAMESPACES,
    OVERLAYS,
    PRODUCTION,
    SERVICES,
    render,
    render_text,
    workloads,
)
from tools.run_local import services as local_services

GRPC_SERVICES = ("api", "scheduler", "executor")
PORTS = {s.name: s.port for s in local_services()}
# What a service still does after its SHUTDOWN_GRACE_SECONDS before it exits (schedcore/server.py,
# services/executor), plus a margin for the kubelet: terminationGracePeriodSeconds must cover it.
AFTER_GRACE_S = {
    "api": DRAINED_STOP_S + 5,
    "scheduler": DRAINED_STOP_S + 5,
    "executor": CANCEL_WAIT_S + FLUSH_WAIT_S + DRAINED_STOP_S + REPORT_FLUSH_S + 5,
}
# Every workload of every overlay.
OVERLAY_WORKLOADS = [(overlay, name) for overlay in OVERLAYS for name in workloads(overlay)]
# The overlays that run Redis themselves (the StatefulSet redis).
IN_CLUSTER_REDIS = [overlay for overlay in OVERLAYS if overlay not in EXTERNAL_REDIS]


def test_overlays_exist() -> None:
    assert OVERLAYS == ["cluster", "dev", "prod"]
    assert set(NAMESPACES) == set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(overlay: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(render_text(overlay))
    validate = Path(sys.executable).with_name("kubernetes-validate")
    out = subprocess.run(
        [str(validate), "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    kinds = {d["kind"] for d in render(overlay).docs}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "NetworkPolicy"} <= kinds
    assert ("StatefulSet" in kinds) == (overlay not in EXTERNAL_REDIS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_in_the_overlay_namespace_and_labelled(overlay: str) -> None:
    m = render(overlay)
    (namespace,) = m.all("Namespace")
    assert namespace["metadata"]["name"] == NAMESPACES[overlay]
    for doc in m.docs:
        meta = doc["metadata"]
        if doc["kind"] != "Namespace":
            assert meta.get("namespace") == NAMESPACES[overlay], (doc["kind"], meta["name"])
            assert meta["labels"]["app.kubernetes.io/part-of"] == "scheduler-suite", (
                doc["kind"],
                meta["name"],
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_reference_to_a_configmap_or_secret_key_resolves(overlay: str) -> None:
    """A variable from a key that is not there stops the pod (CreateContainerConfigError) unless
    optional: every such reference names an object of the tree and one of its keys."""
    m = render(overlay)
    kinds = {"configMapKeyRef": "ConfigMap", "secretKeyRef": "Secret"}
    for name in workloads(overlay):
        for source in m.container(name).get("envFrom", []):
            ((ref, target),) = source.items()
            if not target.get("optional"):
                m.get(kinds[ref.replace("Ref", "KeyRef")], target["name"])
        for var in m.container(name).get("env", []):
            for ref, kind in kinds.items():
                target = var.get("valueFrom", {}).get(ref)
                if target is None or target.get("optional"):
                    continue
                doc = m.get(kind, target["name"])
                assert target["key"] in {**doc.get("data", {}), **doc.get("stringData", {})}, (name, var)


@pytest.mark.parametrize(("overlay", "name"), OVERLAY_WORKLOADS)
def test_workload_is_locked_down_and_bounded(overlay: str, name: str) -> None:
    m = render(overlay)
    pod = m.pod_spec(name)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == name
    assert m.get("ServiceAccount", name)
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"]["drop"] == ["ALL"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), (container["name"], bound)
        assert "readinessProbe" in container and "livenessProbe" in container


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_grpc_service_probes_ports_and_shutdown(overlay: str, name: str) -> None:
    m = render(overlay)
    container = m.container(name)
    port = PORTS[name]
    metrics = int(m.env(name)["METRICS_PORT"])
    health = int(m.env(name)["HEALTH_PORT"])
    # The api's server process i serves metrics on METRICS_PORT + i (API_PROCESSES).
    extra_metrics = [{"name": "metrics-1", "containerPort": metrics + 1}] if name == "api" else []
    assert container["ports"] == [
        {"name": "grpc", "containerPort": port},
        {"name": "metrics", "containerPort": metrics},
        *extra_metrics,
        {"name": "health", "containerPort": health},
    ]
    annotations = m.pod_template(name)["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(metrics),
        "prometheus.io/path": "/metrics",
    }
    # Native gRPC probes on the standard health service: readiness asks for the empty name
    # (follows Redis), liveness for the name that stays SERVING while the process serves. They
    # ask HEALTH_PORT, plaintext and health only: the kubelet's probe cannot present a client
    # certificate (test_probes.py runs one against a TLS service).
    assert container["readinessProbe"]["grpc"] == {"port": health}
    assert container["livenessProbe"]["grpc"] == {"port": health, "service": LIVENESS_SERVICE}
    grace = float(m.env(name).get("SHUTDOWN_GRACE_SECONDS") or 10)
    period = m.pod_spec(name)["terminationGracePeriodSeconds"]
    assert period >= grace + AFTER_GRACE_S[name], (period, grace)
    assert "command" not in container and "args" not in container  # the image's entrypoint runs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_addresses(overlay: str) -> None:
    m = render(overlay)
    for name in ("api", "scheduler"):
        service = m.get("Service", name)
        assert service["spec"]["ports"] == [{"name": "grpc", "port": PORTS[name], "targetPort": "grpc"}]
    # The scheduler spreads work over every executor pod: a headless Service (one address per
    # ready pod) that it resolves itself, through dns:///.
    headless = m.get("Service", "executor-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == {"app.kubernetes.io/name": "executor"}
    assert headless["spec"]["ports"][0]["name"] == "grpc"
    assert m.env("scheduler")["EXECUTOR_ADDRS"] == f"dns:///executor-headless:{PORTS['executor']}"
    assert m.env("executor")["SCHEDULER_ADDR"] == f"scheduler:{PORTS['scheduler']}"
    assert m.env("ui")["API_ADDR"] == f"api:{PORTS['api']}"
    ui = m.container("ui")
    assert ui["readinessProbe"]["httpGet"]["path"] == "/_stcore/health"
    assert ui["livenessProbe"]["httpGet"]["path"] == "/_stcore/health"
    assert {"name": "tmp", "mountPath": "/tmp"} in ui["volumeMounts"]  # HOME=/tmp: ~/.streamlit


@pytest.mark.parametrize("overlay", IN_CLUSTER_REDIS)
def test_redis_credentials_come_from_the_secret(overlay: str) -> None:
    m = render(overlay)
    secret = m.get("Secret", "scheduler-suite-redis")["stringData"]
    url = urlparse(secret["REDIS_URL"])
    assert url.password and url.password == secret["REDIS_PASSWORD"]
    assert url.hostname == "redis" and url.port == 6379
    assert m.get("Service", "redis")["spec"]["selector"] == {"app.kubernetes.io/name": "redis"}
    for name in ("api", "scheduler"):
        (var,) = [v for v in m.container(name)["env"] if v["name"] == "REDIS_URL"]
        assert var["valueFrom"]["secretKeyRef"] == {"name": "scheduler-suite-redis", "key": "REDIS_URL"}
        assert "REDIS_URL" not in m.get("ConfigMap", "scheduler-suite-config")["data"]
    for name in ("executor", "ui"):  # neither needs Redis, so neither gets its credentials
        assert "REDIS_URL" not in m.env(name)
        assert "scheduler-suite-redis" not in str(m.container(name))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_requires_tokens_and_takes_its_first_admin_from_a_secret(overlay: str) -> None:
    m = render(overlay)
    for name in ("api", "scheduler", "executor", "ui"):
        assert m.env(name).get("AUTH_MODE") in (None, "token")  # secure by default: never none
    (var,) = [v for v in m.container("api")["env"] if v["name"] == "AUTH_BOOTSTRAP_TOKEN"]
    assert var["valueFrom"]["secretKeyRef"] == {
        "name": "scheduler-suite-auth",
        "key": "AUTH_BOOTSTRAP_TOKEN",
        "optional": True,
    }
    # No placeholder admin secret ships with the manifests.
    assert all(d.get("metadata", {}).get("name") != "scheduler-suite-auth" for d in m.docs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_http_targets_and_alert_webhooks_may_not_reach_private_addresses(overlay: str) -> None:
    """The api checks URLs, the executor its connections and the scheduler its alert deliveries:
    all three deny private networks, and open sealed secrets with the same optional keys."""
    m = render(overlay)
    for name in ("api", "scheduler", "executor"):
        assert m.env(name).get("HTTP_DENY_PRIVATE") == "true", name
        (var,) = [v for v in m.container(name)["env"] if v["name"] == "SECRET_KEYS"]
        assert var["valueFrom"]["secretKeyRef"] == {
            "name": "scheduler-suite-sealing",
            "key": "SECRET_KEYS",
            "optional": True,
        }, name


@pytest.mark.parametrize("overlay", IN_CLUSTER_REDIS)
def test_redis_is_durable_and_never_evicts(overlay: str) -> None:
    m = render(overlay)
    container = m.container("redis")
    args = container["args"]
    options = dict(zip(args[::2], args[1::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert options["--hash-max-listpack-value"] == "512"  # docs/redis-layout.md, Memory
    assert options["--requirepass"] == "$(REDIS_PASSWORD)"
    maxmemory = int(options["--maxmemory"].removesuffix("mb"))
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") and maxmemory < int(limit.removesuffix("Gi")) * 1024
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    sts = m.workload("redis")["spec"]
    if overlay == "dev":
        assert "volumeClaimTemplates" not in sts
        assert {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}} in sts["template"]["spec"]["volumes"]
    else:
        (claim,) = sts["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"
        assert "volumes" not in sts["template"]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_and_autoscalers(overlay: str) -> None:
    m = render(overlay)
    budgets = {tuple(p["spec"]["selector"]["matchLabels"].items()) for p in m.all("PodDisruptionBudget")}
    assert budgets == {(("app.kubernetes.io/name", name),) for name in workloads(overlay)}
    scalers = {h["spec"]["scaleTargetRef"]["name"]: h["spec"] for h in m.all("HorizontalPodAutoscaler")}
    if overlay == "dev":
        assert scalers == {}
        for name in SERVICES:
            assert m.workload(name)["spec"]["replicas"] == 1, name
        return
    assert set(scalers) == {"api", "executor"}
    for name, spec in scalers.items():
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        # The autoscaler owns the count: a replicas field would be reset by every kubectl apply.
        assert "replicas" not in m.workload(name)["spec"], name


@pytest.mark.parametrize("overlay", PRODUCTION)
def test_prod_is_redundant_and_spread(overlay: str) -> None:
    m = render(overlay)
    hpa = {h["metadata"]["name"]: h["spec"] for h in m.all("HorizontalPodAutoscaler")}
    assert hpa["executor"]["minReplicas"] >= 3 and hpa["api"]["minReplicas"] >= 2
    assert m.workload("scheduler")["spec"]["replicas"] >= 2
    assert m.workload("ui")["spec"]["replicas"] >= 2
    for name in SERVICES:
        anti = m.pod_spec(name)["affinity"]["podAntiAffinity"]
        (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
        rule = term["podAffinityTerm"]
        assert rule["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        assert rule["topologyKey"] == "kubernetes.io/hostname"


# --- NetworkPolicy ----------------------------------------------------------------------------


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        ok = {
            "In": value in expr.get("values", []),
            "NotIn": value not in expr.get("values", []),
            "Exists": value is not None,
            "DoesNotExist": value is None,
        }[op]
        if not ok:
            return False
    return True


def _allowed(policies: list[dict], src: tuple[bool, dict[str, str]], dst: dict[str, str], port: int) -> bool:
    """Whether a pod (same namespace?, labels) may open a TCP connection to `dst` on `port`."""
    same_ns, src_labels = src
    selecting = [
        p
        for p in policies
        if _selects(p["spec"]["podSelector"], dst) and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(p["port"] == port for p in ports):
                continue
            peers = rule.get("from")
            if peers is None:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    continue
                if "namespaceSelector" not in peer and not same_ns:
                    continue
                if _selects(peer.get("podSelector", {}), src_labels):
                    return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(overlay: str) -> None:
    m = render(overlay)
    policies = m.all("NetworkPolicy")
    ports = {**PORTS, "redis": 6379}
    names = workloads(overlay)
    sources = {name: (True, m.pod_labels(name)) for name in names}
    sources["outsider"] = (False, {"app": "something-else"})
    sources["neighbour"] = (True, {"app": "something-else"})
    sources["client"] = (False, {"scheduler-suite/api-client": "true"})
    expected = {
        ("api", "redis"),
        ("scheduler", "redis"),
        ("scheduler", "executor"),
        ("executor", "scheduler"),  # results whose stream is gone (ReportResults)
        ("ui", "api"),
        ("client", "api"),
        *((src, "ui") for src in sources if src != "ui"),
    }
    if "redis" not in names:  # an external Redis: no policy of ours for it
        expected = {(src, dst) for src, dst in expected if "redis" not in (src, dst)}
        assert "redis" not in {p["metadata"]["name"] for p in policies}
    actual = {
        (src, dst)
        for src, peer in sources.items()
        for dst in names
        if src != dst and _allowed(policies, peer, m.pod_labels(dst), ports[dst])
    }
    assert actual == expected
    # Egress is open: executors call HTTP targets, the api and the scheduler reach Redis wherever
    # it is (every node of a Redis Cluster, at the address it announces).
    assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in policies)
    # Metrics: scrapers reach the metrics port of the gRPC services, and nothing else; no one
    # else reaches the metrics port.
    scraper = (False, {"scheduler-suite/metrics-scraper": "true"})
    for dst in names:
        exported = dst in GRPC_SERVICES
        assert _allowed(policies, scraper, m.pod_labels(dst), 9464) == exported, dst
        assert not _allowed(policies, scraper, m.pod_labels(dst), ports[dst]) or dst == "ui", dst
        others = [peer for src, peer in sources.items() if src != dst]
        assert not any(_allowed(policies, peer, m.pod_labels(dst), 9464) for peer in others), dst
    for dst in names:  # a port nobody listens on is closed to everyone
        assert not any(_allowed(policies, peer, m.pod_labels(dst), 1) for peer in sources.values())


def test_network_policy_evaluator_is_not_vacuous() -> None:
    """Without the policies, everything would reach everything: the matrix above means something."""
    m = render("dev")
    assert _allowed([], (False, {}), m.pod_labels("redis"), 6379)
    deny_all = [p for p in m.all("NetworkPolicy") if p["metadata"]["name"] == "default-deny-ingress"]
    assert not _allowed(deny_all, (True, m.pod_labels("api")), m.pod_labels("redis"), 6379)


# --- TLS: tests/deploy/test_k8s_tls.py -----------------------------------------------------------


# --- environment ------------------------------------------------------------------------------


class _Recorder(dict[str, str]):
    """An environment that records every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)


def _settings_variables() -> set[str]:
    from schedcore.settings import Settings

    env = _Recorder()
    env["GRPC_PLAINTEXT"] = "true"  # else it stops at the missing certificate, before the rest
    Settings.from_env(env)
    return env.asked


def _ui_variables() -> set[str]:
    """What the ui reads: what `make run` passes it, and, once ui/ exists, what its code asks for."""
    (ui,) = [s for s in local_services() if s.name == "ui"]
    names = set(ui.env)
    ui_dir = Path(__file__).resolve().parents[2] / "ui"
    if ui_dir.exists():
        code = "\n".join(p.read_text() for p in ui_dir.rglob("*.py"))
        reads = r"""(?:environ(?:\.get)?[\[(]|getenv\(|parse_bool\(os\.environ,)\s*["']([A-Z0-9_]+)["']"""
        read = set(re.findall(reads, code))
        assert "API_ADDR" in read, "the ui no longer reads API_ADDR: update deploy/k8s and this test"
        names = read | {n for n in names if n.startswith("STREAMLIT_")}
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_set_is_read(overlay: str) -> None:
    m = render(overlay)
    read = _settings_variables()
    assert {"REDIS_URL", "EXECUTOR_ADDRS", "SCHEDULER_ADDR", "SHUTDOWN_GRACE_SECONDS"} <= read
    for name in GRPC_SERVICES:
        unread = set(m.env(name)) - read
        assert not unread, f"{overlay}/{name} sets variables no service reads: {sorted(unread)}"
    unread = set(m.env("ui")) - _ui_variables()
    assert not unread, f"{overlay}/ui sets variables the ui does not read: {sorted(unread)}"
    if "redis" in workloads(overlay):
        redis = m.container("redis")
        used = " ".join(redis["args"]) + str(redis["readinessProbe"]) + str(redis["livenessProbe"])
        for var in m.env("redis"):
            assert f"$({var})" in used or f"${var}" in used, var
    # Each ConfigMap key is a setting the services parse (a typo would silently be ignored).
    for config in m.all("ConfigMap"):
        assert set(config["data"]) <= read, config["metadata"]["name"]
    # So is each Secret key the services take whole or by key (REDIS_PASSWORD is Redis' own).
    for secret in m.all("Secret"):
        assert set(secret.get("stringData", {})) - {"REDIS_PASSWORD"} <= read, secret["metadata"]["name"]


def test_a_typo_in_a_variable_is_caught() -> None:
    assert "REDIS_URL" in _settings_variables()
    assert "REDIS_URI" not in _settings_variables()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_runs_a_server_process_per_core_of_its_limit(overlay: str) -> None:
    m = render(overlay)
    container = m.container("api")
    (var,) = [v for v in container["env"] if v["name"] == "API_PROCESSES"]
    assert var["valueFrom"]["resourceFieldRef"] == {
        "containerName": "api",
        "resource": "limits.cpu",
        "divisor": "1",
    }
    limit = str(container["resources"]["limits"]["cpu"])  # "2" or "1500m"
    processes = math.ceil(int(limit[:-1]) / 1000 if limit.endswith("m") else float(limit))
    metrics = int(m.env("api")["METRICS_PORT"])
    declared = {p["containerPort"] for p in container["ports"] if p["name"].startswith("metrics")}
    assert declared == set(range(metrics, metrics + processes))
