"""The benchmark report: JSON (every figure), a Markdown table (inserted into docs/benchmarks.md
between its markers) and a lag-distribution plot."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _lag(figures: dict[str, Any]) -> str:
    lag = figures.get("lag_ms") or {}
    return " / ".join(f"{lag[k]:.0f}" for k in ("p50", "p95", "p99", "max") if k in lag) or "—"


def _costs(figures: dict[str, Any], unit: str) -> str:
    """Redis commands (inside scripts one by one), Redis CPU and memory per execution or job."""
    return (
        f"{figures[f'redis_commands_per_{unit}']} Redis commands, "
        f"{figures[f'redis_cpu_us_per_{unit}']} us Redis CPU, {figures[f'bytes_per_{unit}']:,} bytes"
    )


def table(results: dict[str, Any]) -> str:
    r = results["workloads"]
    rows = ["| workload | result | lag p50 / p95 / p99 / max (ms) |", "|---|---|---|"]
    for part in (_burst_rows, _steady_rows, _api_rows, _size_rows, _partition_rows):
        rows += part(r)
    return "\n".join(rows)


def _burst_rows(r: dict[str, Any]) -> list[str]:
    rows = []
    if "burst" in r:
        b = r["burst"]
        rows.append(
            f"| 1. burst of {b['tasks']:,} one-time tasks | drained in {b['drain_seconds']:.2f} s: "
            f"**{b['fires_per_second']:,} fires/s**; per execution {_costs(b, 'execution')} | {_lag(b)} |"
        )
    if "bullmq_burst" in r and "burst" in r:
        q = r["bullmq_burst"]
        ratio = r["burst"]["fires_per_second"] / max(q["fires_per_second"], 1)
        rows.append(
            f"| 1. same, BullMQ 6.7 (1 worker, concurrency 100, completed jobs kept; its own "
            f"redis-server) | drained in {q['drain_seconds']:.2f} s: {q['fires_per_second']:,} jobs/s "
            f"(**we are {ratio:.2f}x**); per job {_costs(q, 'job')} | {_lag(q)} |"
        )
    if "peer_burst" in r and "burst" in r:
        p = r["peer_burst"]
        ratio = r["burst"]["fires_per_second"] / max(p["fires_per_second"], 1)
        rows.append(
            f"| 1. same, APScheduler 3.11 + Redis job store ({p['jobs']:,} jobs) | drained in "
            f"{p['drain_seconds']:.2f} s: {p['fires_per_second']:,} fires/s "
            f"(**we are {ratio:.1f}x**) | {_lag(p)} |"
        )
    return rows


def _steady_rows(r: dict[str, Any]) -> list[str]:
    rows = []
    if "steady" in r:
        s = r["steady"]
        cpu = ", ".join(f"{k} {v:.0f} %" for k, v in s["cpu_percent"].items())
        rows.append(
            f"| 2. steady: {s['tasks']:,} cron tasks every second, {s['seconds']} s | "
            f"**{s['fires_per_second']:,} fires/s** ({s['fires']:,} of {s['expected_fires']:,}); "
            f"CPU {cpu} | {_lag(s)} |"
        )
    if "bullmq_steady" in r:
        q = r["bullmq_steady"]
        rows.append(
            f"| 2. same, BullMQ 6.7 job schedulers (`* * * * * *`), 1 worker at concurrency 100 | "
            f"{q['fires_per_second']:,} jobs/s ({q['fires']:,} of {q['expected_fires']:,}); "
            f"CPU node {q['node_cpu_percent']:.0f} % | {_lag(q)} |"
        )
    if "idle" in r:
        i = r["idle"]
        rows.append(f"| 3. idle: {i['tasks']} tasks firing alone | | {_lag(i)} |")
    return rows


def _api_rows(r: dict[str, Any]) -> list[str]:
    rows = []
    if "api_create" in r:
        a = r["api_create"]
        rows.append(f"| 4. CreateTask, {a['in_flight']} in flight | **{a['per_second']:,} calls/s** | |")
    if "peer_burst" in r and "api_create" in r:
        p = r["peer_burst"]
        ratio = r["api_create"]["per_second"] / max(p["adds_per_second"], 1)
        rows.append(
            f"| 4. APScheduler add_job (Redis job store) | {p['adds_per_second']:,} jobs/s "
            f"(CreateTask is {ratio:.1f}x) | |"
        )
    if "api_batch" in r:
        a = r["api_batch"]
        rows.append(
            f"| 4. BatchCreateTasks (1,000 per call, {a['in_flight']} in flight) | "
            f"**{a['per_second']:,} tasks/s** | |"
        )
    return rows


def _size_rows(r: dict[str, Any]) -> list[str]:
    rows = []
    if "storage" in r:
        st = r["storage"]
        extra = ""
        if st.get("audit_bytes_per_event") is not None:
            extra = f"; the audit stream, apart: {st['audit_bytes_per_event']:,} bytes per event"
        rows.append(
            f"| 5. storage at {st['tasks']:,} tasks | **{st['bytes_per_task']:,} bytes per task**{extra} | |"
        )
    for run in r.get("scaling", []):
        rows.append(
            f"| scaling: {run['schedulers']} scheduler(s), {run['executors']} executor(s), burst of "
            f"{run['tasks']:,} | {run['fires_per_second']:,} fires/s; CPU s: {run['cpu']} | {_lag(run)} |"
        )
    return rows


def _partition_rows(r: dict[str, Any]) -> list[str]:
    """The burst over partitions: Redis CPU of each primary over the burst per execution of the
    whole burst (of which idle polling over the same window), and the executions it held."""
    rows = []
    for run in r.get("partitions", []):
        primaries = run["primaries"]
        where = "one redis-server" if primaries == 1 else f"a Redis Cluster of {primaries} primaries"
        idle = run.get("redis_idle_cpu_us_per_execution_by_primary") or [0] * primaries
        parts = zip(
            run["redis_cpu_us_per_execution_by_primary"], idle, run["executions_by_primary"], strict=True
        )
        shares = "; ".join(f"{us} us, idle {i} ({held:,} executions)" for us, i, held in parts)
        rows.append(
            f"| partitions: P={run['partitions']} on {where}, {run['schedulers']} schedulers + "
            f"{run['executors']} executors, burst of {run['tasks']:,} | drained in "
            f"{run['drain_seconds']:.2f} s: **{run['fires_per_second']:,} fires/s**; Redis CPU per "
            f"execution {run['redis_cpu_us_per_execution']} us, by primary (of which idle polling): "
            f"{shares} | {_lag(run)} |"
        )
    return rows


def header(results: dict[str, Any]) -> str:
    m = results["machine"]
    return (
        f"Run {results['date']} on {m['cpus']} CPUs ({m['platform']}, Python {m['python']}), "
        f"everything on one machine, `{results['command']}`."
    )


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = results["workloads"]
    series = [
        ("burst (ours)", r.get("burst", {}).get("lags_ms")),
        ("steady (ours)", r.get("steady", {}).get("lags_ms")),
        ("burst (APScheduler + Redis)", r.get("peer_burst", {}).get("lags_ms")),
        ("burst (BullMQ)", r.get("bullmq_burst", {}).get("lags_ms")),
        ("steady (BullMQ)", r.get("bullmq_steady", {}).get("lags_ms")),
    ]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, lags in series:
        if lags:
            ordered = sorted(max(v, 0.5) for v in lags)
            ax.plot(
                ordered,
                [(i + 1) / len(ordered) for i in range(len(ordered))],
                label=f"{label}, n={len(ordered):,}",
            )
    ax.set_xscale("log")
    ax.set_xlabel("lag: start minus nominal time (ms, log scale)")
    ax.set_ylabel("fraction of executions")
    ax.set_title("Lag distribution (CDF)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict[str, Any], out: Path, markdown: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    slim = json.loads(json.dumps(results))
    for figures in slim["workloads"].values():
        if isinstance(figures, dict):
            figures.pop("lags_ms", None)
    for runs in slim["workloads"].values():
        if isinstance(runs, list):
            for run in runs:
                run.pop("lags_ms", None)
    (out / "benchmarks.json").write_text(json.dumps(slim, indent=2) + "\n")
    plot(results, out / "benchmarks-lag.png")
    section = (
        f"{START}\n{header(results)}\n\n{table(results)}\n\n![Lag distribution](benchmarks-lag.png)\n{END}"
    )
    target = markdown or out / "benchmarks.md"
    text = target.read_text() if target.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    target.write_text(before + section + after)


def machine() -> dict[str, object]:
    import os

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
