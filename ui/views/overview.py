"""Overview: tasks by state, executions over time by status, success rate, lag, recent failures."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import altair as alt
import pandas as pd
import streamlit as st

from schedcore import pb
from ui import format as fmt
from ui.common import api, page_guard, task_name, zone

S = pb.ExecutionStatus


def wall_clock_ms(ms: int) -> int:
    """`ms` as the wall-clock time of the display zone, written as if it were UTC."""
    local = datetime.fromtimestamp(ms / 1000, UTC).astimezone(ZoneInfo(zone()))
    return int(local.replace(tzinfo=UTC).timestamp() * 1000)


WINDOWS = {"Last hour": (3600, 60), "Last 24 hours": (86400, 1800)}
FAILED = (S.EXECUTION_STATUS_FAILED, S.EXECUTION_STATUS_TIMED_OUT)

st.title("Overview")
window_name = st.segmented_control("Window", list(WINDOWS), default="Last hour", key="ov_window")
window_s, bucket_s = WINDOWS[window_name or "Last hour"]

with page_guard():
    stats = api().stats(window_s, bucket_s)
    failures: list[pb.Execution] = []
    for status in FAILED:
        failures += api().list_executions(status=status, page_size=10).executions

tasks = {fmt.state(c.state): c.count for c in stats.tasks}
ended = {fmt.status(c.status): c.count for c in stats.executions}
succeeded = ended.get("succeeded", 0)
unsuccessful = ended.get("failed", 0) + ended.get("timed out", 0)

row = st.columns(5)
row[0].metric("Active tasks", tasks.get("active", 0))
row[1].metric("Paused tasks", tasks.get("paused", 0))
row[2].metric("Completed tasks", tasks.get("completed", 0))
row[3].metric("Pending now", stats.pending_executions, help="Executions waiting to be dispatched")
row[4].metric("Running now", stats.running_executions, help="Executions handed to an executor")
row = st.columns(5)
rate = f"{100 * succeeded / (succeeded + unsuccessful):.1f} %" if succeeded + unsuccessful else "—"
row[0].metric("Success rate", rate, help="Succeeded / (succeeded + failed + timed out), in the window")
row[1].metric("Ended", sum(ended.values()), help="Executions that ended in the window, any status")
has_lag = stats.lag.count > 0
lag_help = "Start time minus nominal time of executions that ended in the window (histogram estimate)"
row[2].metric("Lag p50", fmt.dur(stats.lag.p50, has_lag), help=lag_help)
row[3].metric("Lag p95", fmt.dur(stats.lag.p95, has_lag), help=lag_help)
row[4].metric("Lag p99", fmt.dur(stats.lag.p99, has_lag), help=lag_help)

if stats.namespaces:
    st.subheader(
        "Quotas",
        help="Each namespace's tasks, the bytes their specs take and its manual runs this minute, "
        "against its limits",
    )
    quotas = [
        {
            "Namespace": u.namespace,
            "Tasks": u.tasks,
            "Limit": str(u.max_tasks) if u.max_tasks else "none",
            "Used": f"{100 * u.tasks / u.max_tasks:.1f} %" if u.max_tasks else "—",
            "Bytes": u.task_bytes,
            "Bytes limit": str(u.max_task_bytes) if u.max_task_bytes else "none",
            "Runs this minute": u.runs_this_minute,
            "Runs limit": f"{u.max_runs_per_minute} / min" if u.max_runs_per_minute else "none",
        }
        for u in stats.namespaces
    ]
    st.dataframe(pd.DataFrame(quotas), hide_index=True, key="ov_quotas")

st.subheader(f"Executions that ended, {window_name.lower() if window_name else ''}")
rows = [
    {
        "time": wall_clock_ms(b.start_time.ToMilliseconds()),
        "end": wall_clock_ms(b.start_time.ToMilliseconds() + bucket_s * 1000),
        "when": fmt.ts(b.start_time, zone()),
        "status": fmt.status(c.status),
        "count": c.count,
    }
    for b in stats.buckets
    for c in b.counts
]
if rows:
    frame = pd.DataFrame(rows)
    present = [s for s in fmt.STATUS_COLORS if s in set(frame["status"])]
    # The whole window on the axis, each bar as wide as its bucket: executions of the last few
    # minutes are one narrow bar at the right, not the whole chart.
    now_ms = int(time.time() * 1000)
    domain = [wall_clock_ms(now_ms - window_s * 1000), wall_clock_ms(now_ms)]
    chart = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            # Wall-clock times of the chosen zone, shown as UTC so the browser's zone plays no part.
            x=alt.X(
                "time:T",
                title=None,
                scale=alt.Scale(type="utc", domain=domain),
                axis=alt.Axis(format="%H:%M", tickMinStep=bucket_s * 1000),
            ),
            x2="end:T",
            y=alt.Y("sum(count):Q", title="executions"),
            color=alt.Color(
                "status:N",
                scale=alt.Scale(domain=present, range=[fmt.STATUS_COLORS[s] for s in present]),
            ),
            tooltip=["when:N", "status:N", "count:Q"],
        )
        .properties(height=260)
    )
    st.altair_chart(chart, width="stretch")
    st.caption(" · ".join(f"{fmt.STATUS_ICONS[s]} {s}: {ended.get(s, 0)}" for s in present))
else:
    st.info(
        "No execution ended in this window. Executions appear here as tasks fire.", icon=":material/inbox:"
    )

st.subheader("Recent failures")
failures.sort(key=lambda e: e.nominal_time.ToMilliseconds(), reverse=True)
if not failures:
    st.success("No failed or timed-out executions in the kept history.", icon=":material/check_circle:")
for execution in failures[:10]:
    left, right = st.columns([4, 1])
    left.markdown(
        f"{fmt.STATUS_ICONS[fmt.status(execution.status)]} **{fmt.status(execution.status)}** · "
        f"**{task_name(execution.task_id)}** · {fmt.ts(execution.nominal_time, zone())} · "
        f"{execution.status_message or 'no message'}"
    )
    right.page_link(
        "views/executions.py",
        label="Open log",
        icon=":material/open_in_new:",
        query_params={"id": execution.id},
    )
