"""The alert parts of the task pages (docs/alerts.md): the task form's Alerts section, a task's
rules in words, and the notifications sent about a task or one of its executions."""

from __future__ import annotations

import streamlit as st

from ui import alertform as af
from ui import channelform as cf
from ui.client import ApiError
from ui.common import api, show_unreachable
from ui.fielderrors import FormErrors

MAX_CHANNELS = 1000  # ListChannels' largest page: a namespace's channels in one call


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
