"""Executions: the log viewer. Filter by task, status and time; newest first; a detail view."""

from __future__ import annotations

import json
import time

import pandas as pd
import streamlit as st
from google.protobuf import json_format

from schedcore import pb
from ui import alerts, login
from ui import format as fmt
from ui.client import ApiError
from ui.common import api, page_guard, rows_key, show_unreachable, task_filter, task_name, zone
from ui.paging import Pager

S = pb.ExecutionStatus
STATUSES = {"All": 0, **{label.capitalize(): value for value, label in fmt.STATUS_LABELS.items()}}
RANGES = {"Last hour": 3600, "Last 24 hours": 86400, "Last 7 days": 7 * 86400, "All time": None}


def _planned_why(execution: pb.Execution) -> str:
    """What set the planned start: the task's jitter, or a rerun (planned when it was asked for)."""
    return (
        " (rerun asked)" if execution.trigger == pb.ExecutionTrigger.EXECUTION_TRIGGER_RERUN else " (jitter)"
    )


def actions(execution: pb.Execution) -> None:
    """Cancel (PENDING or RUNNING, not being cancelled yet) and Rerun, for editors."""
    if flash := st.session_state.pop("x_flash", None):
        (st.error if flash.startswith("!") else st.success)(flash.lstrip("!"))
    read_only = not login.can_edit()
    active = execution.status in (S.EXECUTION_STATUS_PENDING, S.EXECUTION_STATUS_RUNNING)
    if execution.HasField("cancel_time") and active:
        st.warning("Cancel asked: its executor is stopping the attempt.", icon=":material/hourglass_top:")
    b1, b2, _ = st.columns([1, 1, 4])
    b1.button(
        "Cancel",
        icon=":material/cancel:",
        key="x_cancel",
        disabled=read_only or not active or execution.HasField("cancel_time"),
        help="A pending execution ends at once; a running one once its executor stopped it",
        on_click=_act,
        args=("Cancel asked", lambda: api().cancel_execution(execution.id, "from the dashboard")),
    )
    b2.button(
        "Rerun",
        icon=":material/replay:",
        key="x_rerun",
        disabled=read_only,
        help="Run this occurrence again, as a new execution",
        on_click=_act,
        args=("Rerun created", lambda: api().rerun_execution(execution.id)),
    )


def _act(what: str, call) -> None:  # type: ignore[no-untyped-def]
    """A button's callback (before the page reruns, so it may open the execution it made)."""
    try:
        made = call()
    except ApiError as err:
        st.session_state["x_flash"] = f"!{what} failed: {err}"
        return
    st.session_state["x_flash"] = f"{what}: {made.id}"
    st.session_state["x_open"] = made.id


def detail(execution: pb.Execution) -> None:
    tz = zone()
    label = fmt.status(execution.status)
    st.subheader(f"{fmt.STATUS_ICONS.get(label, '')} Execution `{execution.id}`")
    made_by = {
        pb.ExecutionTrigger.EXECUTION_TRIGGER_MANUAL: "manual run",
        pb.ExecutionTrigger.EXECUTION_TRIGGER_BACKFILL: "backfilled",
        pb.ExecutionTrigger.EXECUTION_TRIGGER_RERUN: f"rerun of `{execution.rerun_of}`",
    }.get(execution.trigger, "scheduled")
    st.markdown(f"Task **{task_name(execution.task_id)}** (`{execution.task_id}`) · {made_by}")
    st.page_link(
        "views/task.py",
        label="Open the task",
        icon=":material/open_in_new:",
        query_params={"id": execution.task_id},
    )
    m = st.columns(5)
    m[0].metric("Status", label)
    m[1].metric("Attempt", execution.attempt or 1)
    m[2].metric(
        "Lag",
        fmt.dur(execution.lag, execution.HasField("lag")),
        help="Start minus planned time (the nominal time, without jitter)",
    )
    m[3].metric("Duration", fmt.dur(execution.duration, execution.HasField("duration")))
    m[4].metric("HTTP status", execution.result.http.status_code or "—")
    st.table(
        pd.DataFrame(
            [
                ("Nominal time", fmt.ts(execution.nominal_time, tz)),
                *(
                    [("Planned start" + _planned_why(execution), fmt.ts(execution.planned_time, tz))]
                    if execution.HasField("planned_time")
                    else []
                ),
                ("Fired", fmt.ts(execution.fire_time, tz)),
                ("Started", fmt.ts(execution.start_time, tz)),
                ("Finished", fmt.ts(execution.finish_time, tz)),
                ("Executor", execution.executor or "—"),
            ],
            columns=["Detail", "Value"],
        ),
        hide_index=True,
        hide_header=True,  # key/value rows: a header row would only repeat "Detail" and "Value"
    )
    if execution.status_message:
        failed = execution.status in (S.EXECUTION_STATUS_FAILED, S.EXECUTION_STATUS_TIMED_OUT)
        (st.error if failed else st.info)(execution.status_message)
    actions(execution)
    st.markdown("**Output**" + (" (truncated)" if execution.result.output_truncated else ""))
    output = execution.result.output
    if not output:
        st.caption("no output")
    else:
        try:
            st.json(json.loads(output))
        except ValueError:
            st.code(output, language=None)
    if execution.HasField("payload"):
        st.markdown("**Payload**")
        st.json(json_format.MessageToDict(execution.payload))
    alerts.execution_notifications(execution)
    with st.expander("Whole record (JSON)"):
        st.json(json_format.MessageToJson(execution))


st.title("Executions")
f1, f2, f3, f4 = st.columns([3, 2, 2, 1.3])
if "task" in st.query_params and "x_task" not in st.session_state:
    st.session_state["x_task"] = st.query_params["task"]
typed = f1.text_input("Task (name or id)", key="x_task", placeholder="all tasks").strip()
status_name = f2.selectbox("Status", list(STATUSES), key="x_status")
range_name = f3.selectbox("Time range (nominal time)", list(RANGES), key="x_range")
size = f4.selectbox("Per page", [25, 50, 100, 200], index=1, key="x_size")
live = st.toggle("Auto-refresh every 5 s", key="x_live")

task_id = task_filter(typed, "x_match")
pager = Pager("executions", (task_id, status_name, range_name, size))


@st.fragment(run_every=5 if live else None)
def listing() -> None:
    span = RANGES[range_name or "All time"]
    start_ms = int(time.time() * 1000) - span * 1000 if span else None
    try:
        reply = api().list_executions(
            task_id=task_id,
            status=STATUSES[status_name or "All"],
            start_ms=start_ms,
            page_size=size,
            page_token=pager.token,
        )
    except ApiError as err:
        if err.unreachable:
            show_unreachable(err)
        else:
            st.error(
                f"Cannot list executions: {err.field_error('task_id') or err.message}",
                icon=":material/warning:",
            )
        return
    if not reply.executions:
        st.info("No execution matches these filters yet.", icon=":material/inbox:")
        pager.controls(reply.next_page_token, 0)
        return
    tz = zone()
    rows = [
        {
            "Nominal time": fmt.ts(e.nominal_time, tz),
            "Task": task_name(e.task_id),
            "Status": fmt.status(e.status),
            "Attempt": e.attempt or 1,
            "Lag": fmt.dur(e.lag, e.HasField("lag")),
            "Duration": fmt.dur(e.duration, e.HasField("duration")),
            "Executor": e.executor or "—",
            "Message": e.status_message,
            "ID": e.id,
        }
        for e in reply.executions
    ]
    key = rows_key("x_table", [e.id for e in reply.executions])
    event = st.dataframe(
        pd.DataFrame(rows), hide_index=True, on_select="rerun", selection_mode="single-row", key=key
    )
    pager.controls(reply.next_page_token, len(reply.executions))  # below: the toolbar covers above
    picked = event.selection.rows if event is not None else []
    if picked and st.session_state.get("x_open") != reply.executions[picked[0]].id:
        st.session_state["x_open"] = reply.executions[picked[0]].id
        st.rerun(scope="app")  # the detail view is outside this fragment


listing()
if task_id:
    alerts.notifications(task_id)

st.divider()
# `?id=`, or `?execution=` as a notification's link names it (DASHBOARD_URL, docs/alerts.md).
linked = st.query_params.get("id") or st.query_params.get("execution")
if linked and "x_open" not in st.session_state:
    st.session_state["x_open"] = linked
opened = st.text_input("Execution id", key="x_open", placeholder="click a row, or paste an id")
if opened.strip():
    with page_guard():
        try:
            found = api().get_execution(opened.strip())
        except ApiError as err:
            if err.unreachable:
                raise
            st.warning(f"No execution `{opened.strip()}`: {err.message}")
            st.stop()
    detail(found)
