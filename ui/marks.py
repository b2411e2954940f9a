"""Run history at a glance: a task's recent executions as coloured marks, newest on the right.

Cost: the marks of one task are one ListExecutions call filtered by that task (page_size = how
many marks). The task list does not make that call for every row (50 calls a page); each row
shows the status of Task.last_execution, which every task carries, and the marks are drawn for
the picked task and on the task's own page."""

from __future__ import annotations

import html
from collections.abc import Sequence

import streamlit as st

from schedcore import pb
from ui import format as fmt
from ui.client import ApiError
from ui.common import api, show_unreachable, zone

HISTORY = 10  # marks shown: the last this many executions


def recent(task_id: str, count: int = HISTORY) -> list[pb.Execution] | None:
    """The task's last `count` executions, newest first (None when the api refused)."""
    try:
        return list(api().list_executions(task_id=task_id, page_size=count).executions)
    except ApiError as err:
        if err.unreachable:
            show_unreachable(err)
        else:
            st.error(f"Cannot list the task's executions: {err}", icon=":material/warning:")
        return None


def color(status: int) -> str:
    return fmt.STATUS_COLORS.get(fmt.status(status), "#999")


def tip(execution: pb.Execution, tz: str) -> str:
    """A mark's tooltip: status, nominal time, duration."""
    return (
        f"{fmt.status(execution.status)} · {fmt.ts(execution.nominal_time, tz)} · "
        f"{fmt.dur(execution.duration, execution.HasField('duration'))}"
    )


def strip(executions: Sequence[pb.Execution], tz: str) -> str:
    """The marks as HTML: one coloured square per execution, oldest first, with a tooltip."""
    spans = [
        f'<span title="{html.escape(tip(e, tz))}" style="color:{color(e.status)};font-size:1.3em">■</span>'
        for e in reversed(executions)
    ]
    return "".join(spans)


def history(task_id: str, count: int = HISTORY) -> list[pb.Execution]:
    """The marks of the task's last `count` executions, with a legend line of their statuses;
    returns those executions, newest first (none when the api refused)."""
    executions = recent(task_id, count)
    if executions is None:
        return []
    if not executions:
        st.caption("No execution yet.")
        return []
    tz = zone()
    counts: dict[str, int] = {}
    for e in executions:
        counts[fmt.status(e.status)] = counts.get(fmt.status(e.status), 0) + 1
    legend = ", ".join(f"{n} {label}" for label, n in counts.items())
    st.markdown(
        f"Last {len(executions)} runs (oldest → newest): {strip(executions, tz)} · {legend}",
        unsafe_allow_html=True,
        help="Hover a mark for its status, nominal time and duration",
    )
    return executions
