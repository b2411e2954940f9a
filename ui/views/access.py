"""Access: the api's tokens (admin only): create one (its secret is shown once), list, revoke."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from schedcore import pb
from ui import format as fmt
from ui import login
from ui.client import ApiError
from ui.common import api, page_guard, zone
from ui.paging import Pager

ROLES = {"viewer": pb.Role.ROLE_VIEWER, "editor": pb.Role.ROLE_EDITOR, "admin": pb.Role.ROLE_ADMIN}
LIFETIMES = {"Never expires": None, "1 day": 86_400, "30 days": 30 * 86_400, "1 year": 365 * 86_400}

st.title("Access")
me = login.who()
if me is None or me.role < pb.Role.ROLE_ADMIN:
    st.info("Managing tokens needs a token with the admin role.", icon=":material/admin_panel_settings:")
    st.stop()
if not me.id:
    st.info(
        "Authentication is off (the api runs with AUTH_MODE=none): tokens are not checked.",
        icon=":material/lock_open:",
    )

created = st.session_state.pop("a_created", None)
if created:
    name, secret = created
    st.success(
        f"Created token **{name}**. Copy its secret now: it is shown only this once.",
        icon=":material/key:",
    )
    st.code(secret, language=None)

with st.form("a_new", clear_on_submit=True):
    st.subheader("New token")
    c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
    name = c1.text_input("Name", key="a_name", placeholder="who or what holds it")
    role = c2.selectbox("Role", list(ROLES), index=1, key="a_role")
    namespace = c3.text_input(
        "Namespace",
        key="a_namespace",
        value=me.namespace,
        disabled=bool(me.namespace),
        help="Empty: every namespace",
    )
    lifetime = c4.selectbox("Expires", list(LIFETIMES), key="a_ttl")
    commands = st.checkbox(
        "May create command targets",
        key="a_commands",
        help="Command targets run programs on the executors' hosts. Admin tokens always may; "
        "an editor token only with this.",
    )
    if st.form_submit_button("Create token", type="primary", icon=":material/add:"):
        try:
            token, secret = api().create_token(
                name.strip(),
                ROLES[role or "editor"],
                namespace.strip(),
                LIFETIMES[lifetime or "Never expires"],
                allow_command_targets=commands,
            )
        except ApiError as err:
            st.error(f"Not created: {err.message}", icon=":material/warning:")
        else:
            st.session_state["a_created"] = (token.name, secret)
            st.rerun()

show_revoked = st.toggle("Show revoked and expired tokens", key="a_revoked")
pager = Pager("tokens", (show_revoked,))
with page_guard():
    reply = api().list_tokens(show_revoked=show_revoked, page_size=50, page_token=pager.token)
if not reply.tokens:
    pager.controls(reply.next_page_token, 0)
    st.info("No tokens.", icon=":material/inbox:")
    st.stop()
tz = zone()
names = {v: k for k, v in ROLES.items()}
st.dataframe(
    pd.DataFrame(
        [
            {
                "Name": t.name,
                "Role": names.get(t.role, "?"),
                "Namespace": t.namespace or "(all)",
                "Command targets": "yes" if t.role >= pb.Role.ROLE_ADMIN or t.allow_command_targets else "no",
                "Created": fmt.ts(t.create_time, tz),
                "Created by": t.created_by,
                "Expires": fmt.ts(t.expire_time, tz) if t.HasField("expire_time") else "never",
                "Revoked": fmt.ts(t.revoke_time, tz) if t.HasField("revoke_time") else "",
                "ID": t.id,
            }
            for t in reply.tokens
        ]
    ),
    hide_index=True,
)
pager.controls(reply.next_page_token, len(reply.tokens))  # below: the toolbar covers above
live = [t for t in reply.tokens if not t.HasField("revoke_time")]
if live:
    me = login.who()
    mine = me.id if me is not None else ""
    labels = {
        t.id: f"{t.name} · {names.get(t.role, '?')} · {t.namespace or 'all namespaces'} ({t.id})"
        + (" · the token you are signed in with" if t.id == mine else "")
        for t in live
    }
    r1, r2 = st.columns([4, 1])
    pick = r1.selectbox(
        "Token to revoke",
        list(labels),
        index=None,
        placeholder="Choose a token",
        key="a_pick",
        format_func=labels.__getitem__,
    )
    chosen = r2.button(
        "Revoke...", icon=":material/block:", key="a_revoke", width="stretch", disabled=pick is None
    )
    if chosen:
        st.session_state["a_confirm"] = pick
    confirm = st.session_state.get("a_confirm")
    if confirm in labels:
        st.warning(
            f"Revoke **{labels[confirm]}**? Every client using it is refused from now on; this "
            "cannot be undone."
            + (" You are signed in with it: this session is signed out." if confirm == mine else ""),
            icon=":material/block:",
        )
        c1, c2, _ = st.columns([1, 1, 4])
        if c1.button("Yes, revoke it", type="primary", key="a_revoke_yes", width="stretch"):
            st.session_state.pop("a_confirm", None)
            with page_guard():
                gone = api().revoke_token(str(confirm))
            st.session_state["a_flash"] = f"Revoked {gone.name}."
            st.rerun()
        if c2.button("Cancel", key="a_revoke_no", width="stretch"):
            st.session_state.pop("a_confirm", None)
            st.rerun()
flash = st.session_state.pop("a_flash", None)
if flash:
    st.success(flash, icon=":material/check_circle:")
