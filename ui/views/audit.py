"""Audit trail: who changed what through the api, newest first."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import alerts
from ui import format as fmt
from ui.common import api, page_guard, task_filter, task_label, zone
from ui.paging import Pager


def channel_label(channel_id: str, labels: dict[str, str]) -> str:
    """A channel column's cell: its name, kind and id ("" for none)."""
    if not channel_id:
        return ""
    return f"{labels[channel_id]} · {channel_id}" if channel_id in labels else f"(deleted) {channel_id}"


st.title("Audit trail")
f1, f2, f3 = st.columns([3, 3, 1])
typed = f1.text_input("Task (name or id)", key="au_task", placeholder="all tasks").strip()
namespace = f2.text_input("Namespace", key="au_ns", placeholder="every namespace you may see").strip()
size = f3.selectbox("Per page", [25, 50, 100], index=1, key="au_size")
task_id = task_filter(typed, "au_match")
pager = Pager("audit", (task_id, namespace, size))
with page_guard():
    reply = api().list_audit_events(
        task_id=task_id, namespace=namespace, page_size=size or 50, page_token=pager.token
    )
if not reply.events:
    pager.controls(reply.next_page_token, 0)
    st.info("No changes recorded for these filters.", icon=":material/history:")
    st.stop()
tz = zone()
# Channel ids are global: every channel the token may see names them, in one call.
channels = alerts.channel_labels("") if any(e.channel_id for e in reply.events) else {}
st.dataframe(
    pd.DataFrame(
        [
            {
                "Time": fmt.ts(e.time, tz),
                "Who": e.actor or "(anonymous)",
                "Action": fmt.AUDIT_ACTIONS.get(e.action, "?"),
                "Task": task_label(e.task_id),
                "Channel": channel_label(e.channel_id, channels),
                "Namespace": e.namespace,
                "Detail": ", ".join(e.update_mask.paths) or e.execution_id or e.token_id,
                "Reason": e.reason,
                "Request id": e.request_id,
            }
            for e in reply.events
        ]
    ),
    hide_index=True,
)
pager.controls(reply.next_page_token, len(reply.events))  # below: the toolbar covers above
