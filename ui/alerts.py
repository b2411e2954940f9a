"""The alert parts of the task pages (docs/alerts.md): the task form's Alerts section, a task's
rules in words, and the notifications sent about a task or one of its executions."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from schedcore import pb
from ui import alertform as af
from ui import channelform as cf
from ui import format as fmt
from ui.client import ApiError
from ui.common import api, show_unreachable, zone
from ui.fielderrors import FormErrors
from ui.paging import Pager

MAX_CHANNELS = 1000  # ListChannels' largest page: a namespace's channels in one call
# ListNotifications' largest page, and as many as a task keeps (the newest 200).
MAX_NOTIFICATIONS = 200
K = pb.AlertKind
KINDS = {
    K.ALERT_KIND_FAILING: "failing",
    K.ALERT_KIND_RECOVERED: "recovered",
    K.ALERT_KIND_SKIPPED: "skipped",
    K.ALERT_KIND_LATE: "late",
    K.ALERT_KIND_RUNNING_LONG: "running long",
    K.ALERT_KIND_TEST: "test",
}
N = pb.NotificationState
STATES = {
    N.NOTIFICATION_STATE_PENDING: "pending",
    N.NOTIFICATION_STATE_DELIVERED: "delivered",
    N.NOTIFICATION_STATE_FAILED: "failed",
}
# Each state a badge, coloured as the execution statuses that mean the same.
STATE_BADGE = st.column_config.MultiselectColumn(
    "State",
    options=list(STATES.values()),
    color=[fmt.STATUS_COLORS["pending"], fmt.STATUS_COLORS["succeeded"], fmt.STATUS_COLORS["failed"]],
    width=85,
    help="pending: not delivered yet (retried with backoff); delivered; failed: every attempt "
    "failed, or its channel was deleted",
)


def channel_labels(namespace: str) -> dict[str, str]:
    """The namespace's channels, id -> "name (kind)" (empty when they cannot be read: the caller
    shows ids instead)."""
    try:
        reply = api().list_channels(namespace=namespace, page_size=MAX_CHANNELS)
    except ApiError as err:
        if err.unreachable:
            show_unreachable(err)
        else:
            st.warning(f"The channels cannot be read: {err.message}", icon=":material/warning:")
        return {}
    return {c.id: cf.label(c) for c in reply.channels}


def policy_section(namespace: str, errors: FormErrors) -> None:
    """The Alerts section of the task form: channels of the task's namespace, the rules, and the
    policy in words as it is being edited."""
    st.subheader("Alerts")
    errors.show("e_alerts")
    labels = channel_labels(namespace)
    # A channel the task names but the namespace no longer has (deleted) stays pickable, so it
    # shows and can be taken out (the api refuses the task until it is).
    named = st.session_state.get("e_alert_channels") or []
    options = {**labels, **{i: f"(no such channel) {i}" for i in named if i not in labels}}
    c1, c2 = st.columns([3, 2])
    c1.multiselect(
        "Channels",
        list(options),
        key="e_alert_channels",
        format_func=options.__getitem__,
        max_selections=5,
        placeholder="Choose up to 5 channels",
        help=f"Channels of the task's namespace ({namespace}); each alert goes to every one",
    )
    with c1:
        errors.show("e_alert_channels")
        if not labels:
            st.caption(f"Namespace {namespace} has no channel yet.")
            st.page_link("views/channels.py", label="Create one on Channels", icon=":material/notifications:")
    c2.number_input(
        "After failures in a row (0: never)",
        min_value=0,
        max_value=1000,
        key="e_alert_failures",
        help="Executions that ended failed or timed out, after their retries; once per incident",
    )
    with c2:
        errors.show("e_alert_failures")
        st.checkbox("And when it recovers", key="e_alert_recovery", help="The first success after that alert")
        errors.show("e_alert_recovery")
        st.checkbox(
            "When occurrences are skipped",
            key="e_alert_skipped",
            help="Missed while the suite was down, or held back by the overlap policy",
        )
        errors.show("e_alert_skipped")
    d1, d2, d3, d4 = st.columns([2, 1, 2, 1])
    for amount, unit, key, label, tip in (
        (d1, d2, "e_alert_late", "Late start (0: never)", "A run not started this long after its time"),
        (d3, d4, "e_alert_running", "Running longer than (0: never)", "An attempt running this long"),
    ):
        amount.number_input(label, min_value=0, max_value=7 * 86400, key=key, help=tip)
        unit.selectbox("Unit", tuple(af.UNITS), key=f"{key}_unit")
        with amount:
            errors.show(key)
    policy = af.to_policy({k: st.session_state.get(k) for k in af.defaults()})
    st.caption(f"**{af.words(policy, options)}**")


def _listed(task_id: str, page_size: int, page_token: str = "") -> pb.ListNotificationsResponse | None:
    try:
        return api().list_notifications(task_id, page_size=page_size, page_token=page_token)
    except ApiError as err:
        if err.unreachable:
            show_unreachable(err)
        else:
            st.error(f"Cannot list the notifications: {err}", icon=":material/warning:")
        return None


def _table(items: Sequence[pb.Notification], names: dict[str, str], *, executions: bool) -> None:
    tz = zone()
    rows = [
        {
            "Raised": fmt.ts(n.create_time, tz),
            "Kind": KINDS.get(n.kind, "?"),
            "Channel": names.get(n.channel_id, f"(deleted) {n.channel_id}"),
            "State": [STATES.get(n.state, "?")],
            "Attempts": n.attempts,
            "Message": n.message,
            "Last error": n.last_error,
            **({"Execution": n.execution_id} if executions else {}),
        }
        for n in items
    ]
    # Widths that fit a 1,400 px window (as the task list's): a long message is cut in its cell.
    text = st.column_config.TextColumn
    columns = {
        "Raised": text(width=155),
        "Kind": text(width=75),
        "Channel": text(width=125),
        "State": STATE_BADGE,
        "Attempts": st.column_config.NumberColumn(width=65),
        "Message": text(width=200 if executions else 280),
        "Last error": text(width=120 if executions else 140),
        "Execution": text(width=90),
    }
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config=columns)


def notifications(task_id: str) -> None:
    """The task's notifications, newest first, paged by the api."""
    st.subheader("Notifications")
    pager = Pager("notifications", (task_id,))
    reply = _listed(task_id, 25, pager.token)
    if reply is None:
        return
    if not reply.notifications:
        pager.controls(reply.next_page_token, 0)
        st.caption("No alert was raised about this task (or they are past their retention).")
        return
    # Channel ids are global: every channel the token may see names them, in one call.
    _table(reply.notifications, channel_labels(""), executions=True)
    pager.controls(reply.next_page_token, len(reply.notifications))  # below: the toolbar covers above


def execution_notifications(execution: pb.Execution) -> None:
    """The notifications about one execution: the task's (as many as it keeps, one call), those
    of this execution."""
    reply = _listed(execution.task_id, MAX_NOTIFICATIONS)
    if reply is None:
        return
    mine = [n for n in reply.notifications if n.execution_id == execution.id]
    st.markdown("**Notifications**")
    if not mine:
        st.caption("No alert was raised about this execution.")
        return
    _table(mine, channel_labels(""), executions=False)
