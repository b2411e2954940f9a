"""Channels: where alerts go (docs/alerts.md). Every token reads them; editors and admins create,
change, test and delete them (the api checks the role: a viewer's buttons are disabled)."""

from __future__ import annotations

from typing import Any

import grpc
import pandas as pd
import streamlit as st

from schedcore import pb
from schedcore.sealing import destination
from ui import channelform as cf
from ui import format as fmt
from ui import login
from ui.client import ApiError
from ui.common import api, page_guard, zone
from ui.fielderrors import FormErrors
from ui.paging import Pager

ERRORS = FormErrors("ch", cf.FIELD_WIDGETS)
KEYS = list(cf.defaults(""))


def load(values: dict[str, Any], marker: object, etag: str = "") -> None:
    """The form's values, once per channel opened (a change made elsewhere meanwhile does not
    replace what was typed); `etag`: the version the form was read from, which a save sends."""
    if st.session_state.get("ch_loaded") != marker:
        st.session_state.update(values)
        st.session_state["ch_loaded"] = marker
        st.session_state["ch_etag"] = etag
        ERRORS.clear()


def current() -> dict[str, Any]:
    return {k: st.session_state.get(k, "") for k in KEYS}


def save(editing: pb.Channel | None, overwrite: bool = False) -> None:
    """The Save button's callback (before the page renders, so errors land by their fields). An
    edit is saved against the version the form was read from; `overwrite`: against the current
    one, replacing a change made meanwhile."""
    channel = cf.to_channel(current())
    ERRORS.clear()
    try:
        if editing is None:
            saved = api().create_channel(channel)
        else:
            channel.id, channel.namespace = editing.id, editing.namespace
            channel.etag = editing.etag if overwrite else st.session_state.get("ch_etag", editing.etag)
            saved = api().update_channel(channel)
    except ApiError as err:
        ERRORS.refused(err, {})
        return
    verb = "Created" if editing is None else "Saved"
    st.session_state["ch_flash"] = f"{verb} channel **{saved.name}** (`{saved.id}`)."
    st.session_state["ch_pick"] = saved.id  # ready for "Send test"
    st.session_state["ch_editing"] = None
    st.session_state["ch_loaded"] = None  # a blank form again


def generate() -> None:
    """Put a new signing secret into the form, and show it this once (the receiver needs it)."""
    values = current()
    slot = cf.generated_slot(values)
    secret = cf.new_secret()
    st.session_state[f"ch_secret_{slot}"] = secret
    if slot == 2:
        st.session_state["ch_two"] = True
    st.session_state["ch_generated"] = (slot, secret)


def reload() -> None:
    st.session_state["ch_loaded"] = None


def listing(can_edit: bool) -> dict[str, pb.Channel]:
    """The table of channels, paged by the api; the channels it shows, by id."""
    f1, f2 = st.columns([4, 1])
    namespace = f1.text_input("Namespace", key="ch_ns", placeholder="every namespace you may see").strip()
    size = f2.selectbox("Per page", [25, 50, 100], index=1, key="ch_size")
    pager = Pager("channels", (namespace, size))
    with page_guard():
        reply = api().list_channels(namespace=namespace, page_size=size or 50, page_token=pager.token)
    if not reply.channels:
        pager.controls(reply.next_page_token, 0)
        st.info(
            "No channels"
            + (" in this namespace." if namespace else " yet.")
            + (" Create one below." if can_edit else ""),
            icon=":material/inbox:",
        )
        return {}
    tz = zone()
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "Name": c.name,
                    "Namespace": c.namespace,
                    "Kind": c.WhichOneof("kind") or "?",
                    "Destination": destination(c),
                    "Updated": fmt.ts(c.update_time, tz),
                    "ID": c.id,
                }
                for c in reply.channels
            ]
        ),
        hide_index=True,
    )
    pager.controls(reply.next_page_token, len(reply.channels))  # below: the toolbar covers above
    return {c.id: c for c in reply.channels}


def actions(channels: dict[str, pb.Channel], can_edit: bool) -> None:
    """Pick a channel: edit it, send it a test notification, delete it (asked first)."""
    if st.session_state.get("ch_pick") not in channels:
        st.session_state["ch_pick"] = None
    labels = {i: f"{c.name} · {c.WhichOneof('kind')} · {c.namespace} ({i})" for i, c in channels.items()}
    p1, p2, p3, p4 = st.columns([4, 1, 1, 1], vertical_alignment="bottom")
    pick = p1.selectbox(
        "Channel",
        list(labels),
        index=None,
        placeholder="Choose a channel",
        key="ch_pick",
        format_func=labels.__getitem__,
    )
    off = pick is None or not can_edit
    if p2.button("Edit", icon=":material/edit:", key="ch_edit", width="stretch", disabled=off):
        st.session_state["ch_editing"] = pick
    tested = p3.button("Send test", icon=":material/send:", key="ch_test", width="stretch", disabled=off)
    if p4.button("Delete...", icon=":material/delete:", key="ch_delete", width="stretch", disabled=off):
        st.session_state["ch_confirm"] = pick
    if tested and pick is not None:
        send_test(channels[pick])
    confirm = st.session_state.get("ch_confirm")
    if confirm in channels:
        confirm_delete(channels[confirm])


def send_test(channel: pb.Channel) -> None:
    try:
        with st.spinner(f"Sending a test notification through {channel.name}..."):
            reply = api().test_channel(channel.id)
    except ApiError as err:
        if err.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            st.error(f"No answer about **{channel.name}** within 30 s.", icon=":material/timer_off:")
        else:
            st.error(f"Not sent: {err}", icon=":material/warning:")
        return
    if reply.delivered:
        st.success(f"Delivered a test notification through **{channel.name}**.", icon=":material/check:")
    else:
        st.error(
            f"**{channel.name}** did not take the test notification: {reply.error}", icon=":material/error:"
        )


def confirm_delete(channel: pb.Channel) -> None:
    st.warning(
        f"Delete channel **{channel.name}** ({channel.WhichOneof('kind')}, namespace "
        f"{channel.namespace})? Its pending notifications end failed; tasks that name it keep its "
        "id, and saving such a task is refused until it is taken out of its alerts.",
        icon=":material/delete:",
    )
    c1, c2, _ = st.columns([1, 1, 4])
    if c1.button("Yes, delete it", type="primary", key="ch_delete_yes", width="stretch"):
        st.session_state.pop("ch_confirm", None)
        try:
            api().delete_channel(channel.id, channel.etag)
        except ApiError as err:
            changed = err.code == grpc.StatusCode.ABORTED
            st.error(
                f"Not deleted: {channel.name} was changed by someone else since the list was read; "
                "look at it again."
                if changed
                else f"Not deleted: {err}",
                icon=":material/warning:",
            )
            return
        if st.session_state.get("ch_editing") == channel.id:
            st.session_state["ch_editing"] = None
        st.session_state["ch_flash"] = f"Deleted channel **{channel.name}**."
        st.rerun()
    if c2.button("Cancel", key="ch_delete_no", width="stretch"):
        st.session_state.pop("ch_confirm", None)
        st.rerun()


def opened() -> pb.Channel | None:
    """The channel being edited, as the api has it now (None: a new one)."""
    channel_id = st.session_state.get("ch_editing")
    if not channel_id:
        return None
    with page_guard():
        try:
            return api().get_channel(channel_id)
        except ApiError as err:
            if err.unreachable:
                raise
            st.warning(f"Channel `{channel_id}` cannot be edited: {err.message}. A new channel instead.")
            st.session_state["ch_editing"] = None
            return None


def secret_field(slot: int, values: dict[str, Any], column: Any) -> None:
    column.text_input(
        f"Signing secret {slot}",
        key=f"ch_secret_{slot}",
        type="password",
        placeholder="stored: leave empty to keep it" if cf.kept(values, slot) else "whsec_...",
        help="whsec_ and the base64 of 24 to 64 random bytes; the receiver checks each request's "
        "signature with it (docs/alerts.md). Write-only: never shown again.",
    )
    with column:
        ERRORS.show(f"ch_secret_{slot}")


def kind_fields(values: dict[str, Any]) -> None:
    kind = cf.kind_of(values)
    if kind == "webhook":
        st.text_input("URL", key="ch_url", placeholder="https://hooks.example.com/tasksched")
        ERRORS.show("ch_url")
        s1, s2 = st.columns(2)
        secret_field(1, values, s1)
        if values["ch_two"]:
            secret_field(2, values, s2)
        g1, g2 = st.columns([1, 3], vertical_alignment="center")
        g1.button("Generate a secret", icon=":material/key:", key="ch_generate", on_click=generate)
        g2.checkbox(
            "A second secret (while the receiver rotates)",
            key="ch_two",
            help="Requests are signed with both; drop the old one once the receiver has the new",
        )
        shown = st.session_state.pop("ch_generated", None)
        if shown:
            slot, secret = shown
            st.success(
                f"A new secret is in **Signing secret {slot}**. Copy it to the receiver now: it is "
                "shown only this once.",
                icon=":material/key:",
            )
            st.code(secret, language=None)
    elif kind == "slack":
        st.text_input(
            "Incoming webhook URL",
            key="ch_slack",
            type="password",
            placeholder="stored: leave empty to keep it"
            if cf.kept(values, 1)
            else "https://hooks.slack.com/...",
            help="The URL is the credential: write-only, never shown again",
        )
        ERRORS.show("ch_slack")
    else:
        st.text_area("Addresses, one per line", key="ch_emails", placeholder="ops@example.com", height=100)
        ERRORS.show("ch_emails")


def form(me: pb.Token) -> None:
    editing = opened()
    if editing is not None:
        load(cf.from_channel(editing), editing.id, editing.etag)
    else:
        load(cf.defaults(me.namespace), "new")
    st.divider()
    head, new = st.columns([5, 1])
    head.subheader(f"Edit {editing.name}" if editing is not None else "New channel")
    if editing is not None and new.button(
        "New channel", icon=":material/add:", key="ch_new", width="stretch"
    ):
        st.session_state["ch_editing"] = None
        st.rerun()
    if (
        editing is not None
        and editing.etag != st.session_state.get("ch_etag")
        and not ERRORS.general_refusal()
    ):
        st.warning(
            "This channel was changed by someone else since you opened it. Saving will ask whether "
            "to reload it or save your edits over it.",
            icon=":material/sync_problem:",
        )
    ERRORS.show_general("channel", editing is not None, reload, save, (editing, True))
    c1, c2 = st.columns([3, 2])
    c1.text_input("Name", key="ch_name", max_chars=200, placeholder="on-call")
    c2.text_input(
        "Namespace",
        key="ch_namespace",
        placeholder="default",
        disabled=editing is not None or bool(me.namespace),
        help="Its tasks' namespace: a task names only channels of its own. Fixed once created; "
        "empty: your token's, or default",
    )
    with c1:
        ERRORS.show("ch_name")
    with c2:
        ERRORS.show("ch_namespace")
    st.radio("Kind", list(cf.KINDS.values()), key="ch_kind", horizontal=True)
    ERRORS.show("ch_kind")
    kind_fields(current())
    st.button(
        "Create channel" if editing is None else "Save changes",
        type="primary",
        icon=":material/save:",
        key="ch_save",
        on_click=save,
        args=(editing,),
    )


st.title("Channels")
me = login.who() or pb.Token()
can_edit = login.can_edit()
if flash := st.session_state.pop("ch_flash", None):
    st.success(flash, icon=":material/check_circle:")
channels = listing(can_edit)
if channels:
    actions(channels, can_edit)
if can_edit:
    form(me)
else:
    st.info(
        "Your token has the viewer role: it reads channels but does not create, change, test or delete them.",
        icon=":material/visibility:",
    )
