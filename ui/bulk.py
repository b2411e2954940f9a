"""Bulk actions on the task list: pause, resume or delete the selected tasks, confirmed first.

Each task is its own call, sent with the etag the list showed: one that changed meanwhile
(ABORTED) or is gone (NOT_FOUND) is reported by name and the others still go through."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import streamlit as st

from schedcore import pb
from ui import login
from ui.client import ApiError
from ui.common import api

PENDING = "t_bulk"  # (action, task ids) waiting for the confirmation
REPORT = "t_bulk_report"
ACTIONS: dict[str, tuple[str, str]] = {  # action: (icon, past tense)
    "Pause": (":material/pause:", "Paused"),
    "Resume": (":material/play_arrow:", "Resumed"),
    "Delete": (":material/delete:", "Deleted"),
}


def _call(action: str) -> Callable[[pb.Task], object]:
    client = api()
    if action == "Pause":
        return lambda t: client.pause_task(t.id, t.etag)
    if action == "Resume":
        return lambda t: client.resume_task(t.id, t.etag)
    return lambda t: client.delete_task(t.id, t.etag)


def run(action: str, tasks: Sequence[pb.Task]) -> tuple[int, list[str]]:
    """Applies `action` to every task; (how many succeeded, a line per failure)."""
    call = _call(action)
    done, failures = 0, []
    for task in tasks:
        try:
            call(task)
        except ApiError as err:
            failures.append(f"{task.name} (`{task.id}`): {err}")
        else:
            done += 1
    return done, failures


def report() -> None:
    """What the last bulk action did (kept across the rerun that refreshed the list)."""
    found = st.session_state.pop(REPORT, None)
    if not found:
        return
    summary, failures = found
    (st.warning if failures else st.success)(summary, icon=":material/checklist:")
    if failures:
        st.error("Failed:\n" + "\n".join(f"- {line}" for line in failures), icon=":material/warning:")


def bar(selected: Sequence[pb.Task]) -> None:
    """The buttons for the selected rows, then the confirmation naming the count. What is asked
    is kept with the tasks as listed (their etags), so the list refreshing under the question,
    with a task gone from it, does not change what the confirmation applies to."""
    if len(selected) >= 2:
        read_only = not login.can_edit()
        columns = st.columns([2, 1, 1, 1])
        columns[0].markdown(f"**{len(selected)} tasks selected**")
        for column, (action, (icon, _)) in zip(columns[1:], ACTIONS.items(), strict=True):
            key = f"t_bulk_{action.lower()}"
            if column.button(action, icon=icon, key=key, width="stretch", disabled=read_only):
                st.session_state[PENDING] = (action, list(selected))
    pending = st.session_state.get(PENDING)
    if not pending:
        return
    action, tasks = pending
    more = " They stop firing; their execution history is kept until retention removes it."
    st.warning(
        f"{action} **{len(tasks)} tasks**?{more if action == 'Delete' else ''}", icon=ACTIONS[action][0]
    )
    yes, no, _ = st.columns([1, 1, 4])
    if yes.button(f"Yes, {action.lower()} {len(tasks)}", type="primary", key="t_bulk_yes"):
        st.session_state.pop(PENDING, None)
        done, failures = run(action, tasks)
        st.session_state[REPORT] = (f"{ACTIONS[action][1]} {done} of {len(tasks)} tasks.", failures)
        st.rerun()
    if no.button("Cancel", key="t_bulk_no"):
        st.session_state.pop(PENDING, None)
        st.rerun()
