"""The monitoring artifacts (docs/metrics.md, "Alerts, dashboard, monitoring component"): the alert
rules pass promtool's check and unit tests, the component's PrometheusRule is the rules file's
twin, the component builds on every overlay and scrapes every metrics port, and rules and
dashboard read only metrics the code defines.

kubernetes-validate knows no CRD: the PrometheusRule and PodMonitors are checked here by their
structure (the fields the operator requires), not against the operator's schemas."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import K8S, NAMESPACES, OVERLAYS, ROOT, Rendered, kubectl, render
from tests.deploy.promql import defined_names, metric_names
from tools import gen_prometheusrule

MONITORING = ROOT / "deploy" / "monitoring"
RULES_FILE = MONITORING / "prometheus-rules.yaml"
RULES_TESTS = Path(__file__).with_name("prometheus-rules-test.yaml")
DASHBOARD = MONITORING / "grafana-dashboard.json"
COMPONENT = K8S / "components" / "monitoring"
SCRAPED = ("api", "scheduler", "executor")
SEVERITIES = {"critical", "warning", "info"}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def promtool() -> str:
    path = os.environ.get("PROMTOOL") or str(ROOT / ".tools" / "promtool")
    if not Path(path).exists():
        raise RuntimeError(f"{path} not found: run `make tools` (tools/fetch_promtool.py) or set PROMTOOL")
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


# --- the rules ---------------------------------------------------------------------------------


def test_promtool_accepts_the_rules() -> None:
    out = run(promtool(), "check", "rules", str(RULES_FILE))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


def test_the_rules_raise_the_alerts_their_unit_tests_expect(tmp_path: Path) -> None:
    """promtool test rules on tests/deploy/prometheus-rules-test.yaml, each expected alert given
    its rule's description (static text; the summaries, templated, are in the test file)."""
    described = {rule["alert"]: rule["annotations"]["description"] for rule in rules()}
    suite = yaml.safe_load(RULES_TESTS.read_text())
    suite["rule_files"] = [str(RULES_FILE)]
    tested = set()
    for case in suite["tests"]:
        for check in case["alert_rule_test"]:
            tested.add(check["alertname"])
            for alert in check["exp_alerts"]:
                alert["exp_annotations"]["description"] = described[check["alertname"]]
    assert tested == set(described), "every alert has unit tests"
    complete = tmp_path / "rules-test.yaml"
    complete.write_text(yaml.safe_dump(suite))
    out = run(promtool(), "test", "rules", str(complete))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_waits_is_graded_and_explained() -> None:
    for rule in rules():
        name = rule.get("alert")
        assert name and name.startswith("Tasksched"), rule
        assert rule.get("for"), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        assert "{{" not in rule["annotations"]["description"], f"{name}: keep descriptions static"
        assert len(rule["annotations"]["description"]) > 150, f"{name}: say what to look at"


def test_the_rules_read_only_metrics_the_code_defines() -> None:
    defined = defined_names()
    for rule in rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= defined, (rule["alert"], used - defined)


def test_the_name_check_catches_a_misspelt_metric() -> None:
    used = metric_names('sum by (le) (rate(tasksched_execution_lag_second_bucket{le="1"}[5m])) > 1')
    assert used == {"tasksched_execution_lag_second_bucket"}
    assert not used <= defined_names()
    with pytest.raises(AssertionError, match="unknown function"):
        metric_names("rat(tasksched_redis_errors_total[5m])")


# --- the kustomize component --------------------------------------------------------------------


def test_the_prometheusrule_is_generated_from_the_rules_file() -> None:
    committed = (COMPONENT / "prometheusrule.yaml").read_text()
    stale = "components/monitoring/prometheusrule.yaml is stale: run python3 tools/gen_prometheusrule.py"
    assert committed == gen_prometheusrule.render(RULES_FILE.read_text()), stale
    assert yaml.safe_load(committed)["spec"] == yaml.safe_load(RULES_FILE.read_text())


def with_component(overlay: str, tmp_path: Path) -> Rendered:
    """The overlay with the component added, as a user's kustomization would (not committed: the
    overlays are exactly cluster, dev, prod)."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": NAMESPACES[overlay],
                "resources": [os.path.relpath(K8S / "overlays" / overlay, tmp_path)],
                "components": [os.path.relpath(COMPONENT, tmp_path)],
            }
        )
    )
    out = subprocess.run([kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return Rendered([d for d in yaml.safe_load_all(out.stdout) if d])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_component_adds_rules_and_scrapes_every_metrics_port(overlay: str, tmp_path: Path) -> None:
    m = with_component(overlay, tmp_path)
    plain = render(overlay)
    added = [d for d in m.docs if d["kind"] in ("PrometheusRule", "PodMonitor")]
    assert len(m.docs) == len(plain.docs) + len(added)  # adds, changes nothing else
    assert sorted(d["kind"] for d in added) == ["PodMonitor"] * 3 + ["PrometheusRule"]
    for doc in added:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["metadata"]["namespace"] == NAMESPACES[overlay]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "scheduler-suite"
    (rule,) = m.all("PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())
    for group in rule["spec"]["groups"]:  # what the operator's schema requires
        assert isinstance(group["name"], str)
        assert all(isinstance(r["alert"], str) and isinstance(r["expr"], str) for r in group["rules"])

    workloads = [d["metadata"]["name"] for d in plain.all("Deployment") + plain.all("StatefulSet")]
    for name in SCRAPED:
        monitor = m.get("PodMonitor", name)["spec"]
        selector = monitor["selector"]["matchLabels"]
        selected = [w for w in workloads if selector.items() <= plain.pod_labels(w).items()]
        assert selected == [name], (name, selected)
        ports = [p["name"] for p in plain.container(name)["ports"] if p["name"].startswith("metrics")]
        assert [e["port"] for e in monitor["podMetricsEndpoints"]] == ports, name
        path = plain.pod_template(name)["metadata"]["annotations"]["prometheus.io/path"]
        assert all(e["path"] == path for e in monitor["podMetricsEndpoints"]), name


# --- the dashboard ------------------------------------------------------------------------------


def panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    flat = []
    for panel in dashboard["panels"]:
        flat += [panel, *panel.get("panels", [])]
    return flat


def test_the_dashboard_takes_its_datasource_from_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    uid = "${" + variable["name"] + "}"
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]


def test_the_dashboard_reads_only_metrics_the_code_defines() -> None:
    defined = defined_names()
    read: set[str] = set()
    for panel in panels():
        for target in panel.get("targets", []):
            used = metric_names(target["expr"])
            assert used and used <= defined, (panel["title"], used - defined)
            read |= used
    # The panels the issue asks for: lag, fires, outcomes, backlog, Redis, capacity, RPCs.
    assert {
        "tasksched_execution_lag_seconds_bucket",
        "tasksched_occurrences_fired_total",
        "tasksched_executions_finished_total",
        "tasksched_executions_ready",
        "tasksched_executions_in_flight",
        "tasksched_executions_waiting_command",
        "tasksched_redis_errors_total",
        "tasksched_executor_attempts_in_flight",
        "tasksched_executor_concurrency",
        "tasksched_rpc_handled_total",
    } <= read
