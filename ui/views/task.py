"""One task's page, at a stable URL (/task?id=<task id>): its schedule and next runs, target,
policies, recent executions, notifications and audit events, and its actions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from schedcore import pb
from ui import alertform as af
from ui import alerts, login, marks
from ui import format as fmt
from ui import taskform as tf
from ui.client import ApiError
from ui.common import api, page_guard, zone

PAGE = "views/task.py"


def _dur(message: Any, name: str, default: str) -> str:
    """A duration field in words, or the api's default when it is unset."""
    return fmt.dur(getattr(message, name)) if message.HasField(name) else default


def policies(task: pb.Task) -> list[str]:
    """The task's policies in words, one line each."""
    values = tf.from_task(task, datetime.now(UTC))
    retry = task.retry_policy
    rules = task.alerts if task.HasField("alerts") else None
    return [
        f"**Timeout**: {_dur(task, 'timeout', '60 s')}",
        (
            f"**Retries**: up to {retry.max_attempts} attempts, backoff "
            f"{_dur(retry, 'initial_backoff', '1 s')} to {_dur(retry, 'max_backoff', '60 s')} "
            f"(times {retry.backoff_multiplier or 2.0:g} each)"
            if retry.max_attempts > 1
            else "**Retries**: none (1 attempt)"
        ),
        f"**Overlap**: {values['e_overlap']}"
        + (f", at most {task.overlap.max_concurrent} at once" if task.overlap.max_concurrent else ""),
        f"**Catch-up**: {values['e_catch_up']}"
        + (f", at most {task.catch_up.limit}" if task.catch_up.limit else "")
        + (f", within {_dur(task.catch_up, 'window', '')}" if task.catch_up.HasField("window") else ""),
        "**Pause after failures**: "
        + (f"after {task.pause_after_failures} in a row" if task.pause_after_failures else "never"),
        f"**Max jitter**: {_dur(task, 'max_jitter', 'none')}",
        f"**Alerts**: {af.words(rules, alerts.channel_labels(task.namespace))}",
    ]


def act(label: str, call, done: str) -> None:  # type: ignore[no-untyped-def]
    """A button's callback: the page reruns with the api's answer."""
    try:
        call()
    except ApiError as err:
        st.session_state["tp_flash"] = f"!{label} failed: {err}"
        return
    st.session_state["tp_flash"] = done


def actions(task: pb.Task) -> None:
    read_only = not login.can_edit()
    b = st.columns(5)
    if b[0].button("Edit", icon=":material/edit:", key="tp_edit", width="stretch", disabled=read_only):
        st.session_state["edit_id"] = task.id
        st.session_state["e_loaded"] = None  # opening Edit loads the task's current version
        st.switch_page("views/edit.py")
    paused = task.state == pb.TaskState.TASK_STATE_PAUSED
    switch = (
        ("Resume", ":material/play_arrow:", "tp_resume", False, api().resume_task, "Resumed")
        if paused  # a completed task has nothing to pause
        else (
            "Pause",
            ":material/pause:",
            "tp_pause",
            task.state != pb.TaskState.TASK_STATE_ACTIVE,
            api().pause_task,
            "Paused",
        )
    )
    label, icon, key, off, method, done = switch
    b[1].button(
        "Run now",
        icon=":material/bolt:",
        key="tp_run",
        width="stretch",
        disabled=read_only,
        on_click=act,
        args=("Run now", lambda: api().run_task(task.id), f"Started a run of {task.name}."),
    )
    b[2].button(
        label,
        icon=icon,
        key=key,
        width="stretch",
        disabled=read_only or off,
        on_click=act,
        args=(label, lambda: method(task.id, task.etag), f"{done} {task.name}."),
    )
    if b[3].button(
        "Clone", icon=":material/content_copy:", key="tp_clone", width="stretch", disabled=read_only
    ):
        st.session_state.pop("edit_id", None)
        st.session_state["e_clone"] = task.id  # the edit page opens prefilled, as a new task
        st.session_state["e_loaded"] = None
        st.switch_page("views/edit.py")
    b[4].page_link(
        "views/executions.py",
        label="Executions",
        icon=":material/receipt_long:",
        query_params={"task": task.id},
    )


def executions_table(executions: list[pb.Execution], tz: str) -> None:
    rows = [
        {
            "Nominal time": fmt.ts(e.nominal_time, tz),
            "Status": fmt.status(e.status),
            "Attempt": e.attempt or 1,
            "Duration": fmt.dur(e.duration, e.HasField("duration")),
            "Message": e.status_message,
            "ID": e.id,
        }
        for e in executions
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def audit(task_id: str, tz: str) -> None:
    st.subheader("Audit")
    with page_guard():
        events = api().list_audit_events(task_id=task_id, page_size=20).events
    if not events:
        st.caption("No change recorded for this task.")
        return
    rows = [
        {
            "Time": fmt.ts(e.time, tz),
            "Who": e.actor or "(anonymous)",
            "Action": fmt.AUDIT_ACTIONS.get(e.action, "?"),
            "Detail": ", ".join(e.update_mask.paths) or e.execution_id,
            "Reason": e.reason,
        }
        for e in events
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.page_link("views/audit.py", label="The whole audit trail", icon=":material/history:")


task_id = str(st.query_params.get("id", "")).strip()
if not task_id:
    st.title("Task")
    st.info("No task named: open one from the task list.", icon=":material/list:")
    st.page_link("views/tasks.py", label="Tasks", icon=":material/list:")
    st.stop()
with page_guard():
    try:
        task = api().get_task(task_id)
    except ApiError as err:
        if err.unreachable or err.code.name != "NOT_FOUND":
            raise
        st.title("Task")
        st.warning(f"No task `{task_id}`: it was deleted, or your token may not see it.")
        st.page_link("views/tasks.py", label="Tasks", icon=":material/list:")
        st.stop()

tz = zone()
st.title(task.name)
st.markdown(
    f"{fmt.state(task.state)} · `{task.id}` · namespace `{task.namespace}`"
    + (f" · labels `{fmt.labels(dict(task.labels))}`" if task.labels else "")
)
if task.description:
    st.caption(task.description)
if flash := st.session_state.pop("tp_flash", None):
    (st.error if flash.startswith("!") else st.success)(flash.lstrip("!"))
if task.pause_reason:
    st.warning(task.pause_reason.capitalize(), icon=":material/pause_circle:")
actions(task)

left, right = st.columns(2)
with left:
    st.subheader("Schedule")
    st.markdown(f"{fmt.schedule(task.schedule, tz)} · target {fmt.target(task.target)}")
    with page_guard():
        upcoming = api().preview(task.schedule, 5) if task.state == pb.TaskState.TASK_STATE_ACTIVE else []
    if upcoming:
        st.markdown("Next runs:\n" + "\n".join(f"- {fmt.when(ms, tz)}" for ms in upcoming))
    else:
        st.caption("No upcoming run (paused or completed).")
with right:
    st.subheader("Policies")
    st.markdown("\n".join(f"- {line}" for line in policies(task)))

st.subheader("Recent executions")
recent = marks.history(task.id)
if recent:
    executions_table(recent, tz)
alerts.notifications(task.id)
audit(task.id, tz)
