"""Tasks: a filterable list, paged by the api, with per-task actions."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from google.protobuf import json_format

from schedcore import pb
from ui import alertform as af
from ui import alerts, bulk, login, marks
from ui import format as fmt
from ui.client import ApiError
from ui.common import api, page_guard, rows_key, zone
from ui.paging import Pager

STATES = {"All": 0, "Active": 1, "Paused": 2, "Completed": 3}

st.title("Tasks")
flash = st.session_state.pop("tasks_flash", None)
if flash:
    st.success(flash, icon=":material/check_circle:")

f1, f2, f3, f4, f5 = st.columns([3, 2, 3, 2, 1.3])
needle = f1.text_input("Name contains", key="t_needle", placeholder="search by name")
state_name = f2.selectbox("State", list(STATES), key="t_state")
labels_text = f3.text_input("Labels", key="t_labels", placeholder="team=ops, env=prod")
order = f4.selectbox("Order by", ["Name", "Next run"], key="t_order")
size = f5.selectbox("Per page", [25, 50, 100, 200], index=1, key="t_size")
try:
    label_filter = fmt.parse_labels(labels_text)
except ValueError as exc:
    f3.error(str(exc))
    st.stop()

pager = Pager("tasks", (needle, state_name, sorted(label_filter.items()), order, size))
with page_guard():
    reply = api().list_tasks(
        page_size=size,
        page_token=pager.token,
        state=STATES[state_name or "All"],
        labels=label_filter,
        name_contains=needle,
        by_next_run=order == "Next run",
    )
total = reply.total_size if reply.HasField("total_size") else None
if not reply.tasks:
    pager.controls(reply.next_page_token, 0, total)
    if pager.index == 0 and not (needle or label_filter or STATES[state_name or "All"]):
        st.info("No tasks yet. Create one on **Create / edit task**.", icon=":material/inbox:")
        st.page_link("views/edit.py", label="Create a task", icon=":material/add:")
    else:
        st.info("No task matches these filters.", icon=":material/search:")
    st.stop()

tz = zone()
tasks = {t.id: t for t in reply.tasks}
table = pd.DataFrame(
    [
        {
            "Name": t.name,
            "State": fmt.state(t.state),
            "Schedule": fmt.schedule(t.schedule, tz),
            "Next run": fmt.ts(t.next_run_time, tz),
            "Last status": fmt.status(t.last_execution.status) if t.HasField("last_execution") else "—",
            "Target": fmt.target(t.target),
            "Labels": fmt.labels(dict(t.labels)),
        }
        for t in reply.tasks
    ]
)
# Fixed widths that fit a 1,400 px window: a long schedule or URL is cut in its own column instead
# of pushing the labels off the table. The id is in the picker below, with the whole task.


def _status_color(label: str) -> str:
    color = fmt.STATUS_COLORS.get(label)
    return f"color: {color}; font-weight: 600" if color else ""


event = st.dataframe(
    table.style.map(_status_color, subset=["Last status"]),  # the last run's status in its colour
    hide_index=True,
    on_select="rerun",
    selection_mode="multi-row",  # one row: that task below; several: the bulk actions
    key=rows_key("t_table", list(tasks)),  # another page's rows start unselected
    column_config={
        "Name": st.column_config.TextColumn(width=140),
        "State": st.column_config.TextColumn(width=65),
        "Schedule": st.column_config.TextColumn(width=140),
        "Next run": st.column_config.TextColumn(width=155),
        "Last status": st.column_config.TextColumn(width=85),
        "Target": st.column_config.TextColumn(width=100),
        "Labels": st.column_config.TextColumn(width=220, help="All of them: below, once a task is picked"),
    },
)
# Below the table: the table's toolbar, which shows above its top right corner, covered Next.
pager.controls(reply.next_page_token, len(reply.tasks), total)
picked_rows = list(event.selection.rows) if event is not None else []
ids = list(tasks)
bulk.report()
bulk.bar([tasks[ids[row]] for row in picked_rows])
if picked_rows and st.session_state.get("t_last_row") != picked_rows[-1]:
    st.session_state["t_pick"] = ids[picked_rows[-1]]  # the row clicked last
st.session_state["t_last_row"] = picked_rows[-1] if picked_rows else None
if st.session_state.get("t_pick") not in tasks:
    st.session_state["t_pick"] = ids[0]

st.divider()
task_id = st.selectbox(
    "Task", ids, key="t_pick", format_func=lambda i: f"{tasks[i].name} ({i})", help="Or click a row above"
)
task = tasks[task_id]
st.markdown(
    f"**{task.name}** · {fmt.state(task.state)} · {fmt.schedule(task.schedule, tz)} · "
    f"next run {fmt.ts(task.next_run_time, tz)}"
    + (f" · labels `{fmt.labels(dict(task.labels))}`" if task.labels else "")
)
if task.description:
    st.caption(task.description)
if task.HasField("alerts"):
    st.caption(af.words(task.alerts, alerts.channel_labels(task.namespace)), help="docs/alerts.md")
if task.pause_reason:
    st.warning(task.pause_reason.capitalize(), icon=":material/pause_circle:")
marks.history(task.id)  # one call, for the picked task only: the rows show their last status


def act(label: str, call, done: str) -> None:  # type: ignore[no-untyped-def]
    try:
        call()
    except ApiError as err:
        st.error(f"{label} failed: {err}", icon=":material/warning:")
        return
    st.session_state["tasks_flash"] = done
    st.rerun()


# A viewer's token reads but does not change tasks: its buttons are shown disabled.
read_only = not login.can_edit()
a1, a2, a3, a4, a5 = st.columns(5)
if a1.button("Edit", icon=":material/edit:", key="t_edit", width="stretch", disabled=read_only):
    st.session_state["edit_id"] = task.id
    st.session_state["e_loaded"] = None  # opening Edit loads the task's current version
    st.switch_page("views/edit.py")
if task.state == pb.TaskState.TASK_STATE_PAUSED:
    if a2.button("Resume", icon=":material/play_arrow:", key="t_resume", width="stretch", disabled=read_only):
        act("Resume", lambda: api().resume_task(task.id, task.etag), f"Resumed {task.name}.")
elif task.state == pb.TaskState.TASK_STATE_ACTIVE:
    if a2.button("Pause", icon=":material/pause:", key="t_pause", width="stretch", disabled=read_only):
        act("Pause", lambda: api().pause_task(task.id, task.etag), f"Paused {task.name}.")
else:
    a2.button("Pause", icon=":material/pause:", key="t_pause", width="stretch", disabled=True)
if a3.button("Run now", icon=":material/bolt:", key="t_run", width="stretch", disabled=read_only):
    act("Run now", lambda: api().run_task(task.id), f"Started a run of {task.name}; see Executions.")
if a4.button("Delete", icon=":material/delete:", key="t_delete", width="stretch", disabled=read_only):
    st.session_state["t_confirm"] = task.id
a5.page_link("views/task.py", label="Task page", icon=":material/open_in_new:", query_params={"id": task.id})

if st.session_state.get("t_confirm") == task.id:
    st.warning(
        f"Delete **{task.name}**? It stops firing; its execution history is kept until retention removes it.",
        icon=":material/delete:",
    )
    c1, c2, _ = st.columns([1, 1, 4])
    if c1.button("Yes, delete", type="primary", key="t_confirm_yes"):
        st.session_state.pop("t_confirm", None)
        act("Delete", lambda: api().delete_task(task.id, task.etag), f"Deleted {task.name}.")
    if c2.button("Cancel", key="t_confirm_no"):
        st.session_state.pop("t_confirm", None)
        st.rerun()

with st.expander("Full task (JSON)"):
    st.json(json_format.MessageToJson(task))
