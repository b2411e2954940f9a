"""What every page shares: the api client, the display time zone, and error rendering."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence

import grpc
import streamlit as st

from schedcore.store.keys import TASK_ID
from ui import login
from ui.client import Api, ApiError, api_addr


@st.cache_resource(show_spinner=False)
def _api(addr: str) -> Api:
    return Api(addr)


def base_api() -> Api:
    """The shared client without a token (for signing in)."""
    return _api(api_addr())


def api() -> Api:
    """One channel per api address, shared by every session; calls carry this session's token."""
    return _api(api_addr()).as_user(login.token())


def zone() -> str:
    """The time zone times are shown in (chosen in the sidebar)."""
    return str(st.session_state.get("display_tz", "UTC"))


def show_unreachable(err: ApiError) -> None:
    st.error(
        f"**The api at `{api_addr()}` cannot be reached** ({err.code.name.lower().replace('_', ' ')}: "
        f"{err.message}).\n\nCheck that the api service is running and that `API_ADDR` points at it; "
        "this page retries when you reload it.",
        icon=":material/power_off:",
    )


@contextlib.contextmanager
def page_guard() -> Iterator[None]:
    """Render an api failure as a readable message, not a traceback, and stop the page."""
    try:
        yield
    except ApiError as err:
        if err.unreachable:
            show_unreachable(err)
        elif err.code == grpc.StatusCode.UNAUTHENTICATED:
            login.sign_out("Your token is no longer accepted (revoked or expired): sign in again.")
            st.rerun()
        elif err.code == grpc.StatusCode.PERMISSION_DENIED:
            st.error(f"Your token does not allow this: {err.message}", icon=":material/block:")
        else:
            st.error(f"The api refused the request: {err}", icon=":material/warning:")
        st.stop()


@st.cache_data(ttl=30, show_spinner=False)
def _task_name(addr: str, who: str, task_id: str, _token: str) -> str:
    # Keyed by the token's digest (`who`): a name one token may read is not cached for another.
    # Underscored arguments are left out of the key, so the token itself is never hashed or kept.
    try:
        return _api(addr).as_user(_token).get_task(task_id).name
    except ApiError as err:
        return "(deleted)" if err.code.name == "NOT_FOUND" else "?"


def task_name(task_id: str) -> str:
    """A task's name for display (cached briefly: lists show many rows of few tasks)."""
    return _task_name(api_addr(), login.token_digest(), task_id, login.token())


def rows_key(prefix: str, ids: Sequence[str]) -> str:
    """The widget key of a selectable table showing the rows `ids`, in order. A table keeps its
    selection by row position: when a refresh brings other rows, a new key starts it afresh, so a
    row picked before never names the row that took its place."""
    return f"{prefix}:{hashlib.blake2s(' '.join(ids).encode(), digest_size=6).hexdigest()}"


def task_filter(typed: str, key: str) -> str:
    """The task a "Task (name or id)" filter names: an id as typed; for a name, the one picked
    (selectbox `key`) among the tasks whose name contains it, the page stopped with a warning when
    none does; "" when nothing is typed (every task)."""
    if not typed:
        return ""
    if TASK_ID.match(typed):
        st.caption(f"Task: **{task_name(typed)}**")
        return typed
    with page_guard():
        matches = api().list_tasks(name_contains=typed, page_size=20).tasks
    if not matches:
        st.warning(f"No task's name contains {typed!r}.")
        st.stop()
    names = {t.id: f"{t.name} ({t.id})" for t in matches}
    return str(st.selectbox("Matching tasks", list(names), format_func=names.__getitem__, key=key))


def task_label(task_id: str) -> str:
    """A task column's cell: its name and id ("" for none)."""
    return f"{task_name(task_id)} ({task_id})" if task_id else ""
