"""Signing in to the dashboard with an api token.

The token is typed into a password field, checked with WhoAmI, and kept only in this browser
session's server-side state (st.session_state): never in the URL, a cookie, a log line or a cache
key (caches are keyed by a digest of it). Reloading the page starts a new session, which asks again.
When the api runs without authentication (AUTH_MODE=none), WhoAmI answers without a token and no
sign-in is asked for.
"""

from __future__ import annotations

import hashlib

import grpc
import streamlit as st

from schedcore import pb
from ui.client import Api, ApiError

TOKEN = "_auth_token"
WHO = "_auth_who"
NOTICE = "_auth_notice"
QUERY = "_auth_query"  # the query of the link opened before signing in
ROLE_NAMES = {
    pb.Role.ROLE_VIEWER: "viewer",
    pb.Role.ROLE_EDITOR: "editor",
    pb.Role.ROLE_ADMIN: "admin",
}


def token() -> str:
    return str(st.session_state.get(TOKEN, ""))


def token_digest() -> str:
    """Stands for the session's token in cache keys: what one token may see is not another's."""
    return hashlib.sha256(token().encode()).hexdigest()[:16]


def who() -> pb.Token | None:
    found = st.session_state.get(WHO)
    return found if isinstance(found, pb.Token) else None


def can_edit() -> bool:
    me = who()
    return me is not None and me.role >= pb.Role.ROLE_EDITOR


def sign_out(notice: str = "") -> None:
    for key in (TOKEN, WHO):
        st.session_state.pop(key, None)
    if notice:
        st.session_state[NOTICE] = notice


def gate(client: Api, on_unreachable: object) -> pb.Token:
    """The caller's identity; renders the sign-in form and stops the page until there is one."""
    known = who()
    if known is not None:
        return known
    try:
        me = client.whoami()  # answers without a token only when authentication is off
    except ApiError as err:
        if err.code != grpc.StatusCode.UNAUTHENTICATED:
            if callable(on_unreachable) and err.unreachable:
                on_unreachable(err)
            else:
                st.error(f"The api refused the request: {err}", icon=":material/warning:")
            st.stop()
    else:
        st.session_state[WHO] = me
        return me
    if QUERY not in st.session_state:
        st.session_state[QUERY] = st.query_params.to_dict()  # the deep link's, for after sign-in
    _form(client)
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def _form(client: Api) -> None:
    st.title("Sign in")
    notice = st.session_state.pop(NOTICE, "")
    if notice:
        st.warning(notice, icon=":material/lock_clock:")
    st.write(
        "The api asks for a token. Paste the one an admin created for you "
        "(`schedctl tokens create`), or the development token `make run` printed."
    )
    with st.form("login", clear_on_submit=True):
        typed = st.text_input("API token", type="password", key="login_token")
        submitted = st.form_submit_button("Sign in", type="primary", icon=":material/login:")
    if not submitted:
        return
    if not typed.strip():
        st.error("Enter a token.", icon=":material/key:")
        return
    try:
        me = client.as_user(typed.strip()).whoami()
    except ApiError as err:
        if err.code == grpc.StatusCode.UNAUTHENTICATED:
            st.error(
                "This token is not accepted: it is unknown, revoked or expired.", icon=":material/key_off:"
            )
        else:
            st.error(f"Could not check the token: {err}", icon=":material/warning:")
        return
    st.session_state[TOKEN] = typed.strip()
    st.session_state[WHO] = me
    st.query_params.from_dict(st.session_state.pop(QUERY, {}))
    st.rerun()


def describe(me: pb.Token) -> str:
    if not me.id:
        return "Authentication is off (the api runs with AUTH_MODE=none)."
    scope = f"namespace `{me.namespace}`" if me.namespace else "all namespaces"
    return f"Signed in as **{me.name}** · {ROLE_NAMES.get(me.role, '?')} · {scope}"
