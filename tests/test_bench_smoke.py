"""`make bench` keeps working: every workload runs tiny (`--smoke`). No figure is asserted:
performance is measured by the benchmarks, not by tests on a shared machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke_writes_a_complete_report(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)], cwd=ROOT, check=True, timeout=300
    )
    results = json.loads((tmp_path / "benchmarks.json").read_text())
    workloads = results["workloads"]
    assert set(workloads) == {
        "burst",
        "peer_burst",
        "bullmq_burst",
        "bullmq_steady",
        "steady",
        "idle",
        "api_create",
        "api_batch",
        "storage",
        "scaling",
        "partitions",
    }
    assert workloads["burst"]["tasks"] == 200 and workloads["peer_burst"]["ran"] == 100
    assert workloads["bullmq_burst"]["ran"] == 100 and workloads["bullmq_burst"]["redis_commands_per_job"] > 0
    assert workloads["steady"]["fires"] > 0 and workloads["bullmq_steady"]["fires"] > 0
    assert [run["schedulers"] for run in workloads["scaling"]] == [1, 2]
    # P = 12 on one redis-server, then on a Redis Cluster of 3 primaries: every primary held a
    # share of the burst, and its Redis CPU was measured.
    partitions = workloads["partitions"]
    assert [(run["partitions"], run["primaries"]) for run in partitions] == [(12, 1), (12, 3)]
    for run in partitions:
        assert sum(run["executions_by_primary"]) == 200 and min(run["executions_by_primary"]) > 0
        assert len(run["redis_cpu_us_per_execution_by_primary"]) == run["primaries"]
        assert all(us > 0 for us in run["redis_cpu_us_per_execution_by_primary"])
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "<!-- bench:start -->" in markdown and "fires/s" in markdown
    assert (tmp_path / "benchmarks-lag.png").stat().st_size > 1000


def test_bench_scripts_reports_each_script_and_the_stored_bytes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.scripts", "600"],
        cwd=ROOT,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["executions"] == 600
    assert set(report["redis_us_per_execution"]) == {"read", "commit", "lease", "complete"}
    assert all(us > 0 for us in report["redis_us_per_execution"].values())
    assert report["bytes_per_execution_by_key"]["ts:{0}:exec:*"] > 0
