"""The dashboard: `streamlit run ui/app.py` (API_ADDR names the api, default localhost:50051)."""

from __future__ import annotations

import sys
from pathlib import Path

# Streamlit puts ui/ on sys.path; the repository root is needed for `schedcore` and `ui`.
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import streamlit as st  # noqa: E402

from schedcore import pb  # noqa: E402
from ui import format as fmt  # noqa: E402
from ui import login  # noqa: E402
from ui.client import api_addr  # noqa: E402
from ui.common import base_api, show_unreachable  # noqa: E402

st.set_page_config(page_title="Scheduler", page_icon=":material/schedule:", layout="wide")
pages = [
    st.Page("views/overview.py", title="Overview", icon=":material/monitoring:", default=True),
    st.Page("views/tasks.py", title="Tasks", icon=":material/list:"),
    st.Page("views/edit.py", title="Create / edit task", icon=":material/edit:"),
    st.Page("views/executions.py", title="Executions", icon=":material/receipt_long:"),
    st.Page("views/channels.py", title="Channels", icon=":material/notifications:"),
    st.Page("views/audit.py", title="Audit trail", icon=":material/history:"),
    # One task, at /task?id=<task id>: reached from the task list and Executions, not the menu.
    st.Page("views/task.py", title="Task", icon=":material/task:", url_path="task", visibility="hidden"),
]
access = st.Page("views/access.py", title="Access", icon=":material/key:")
known = login.who()
if known is None:
    # Resolve the page the URL names before the sign-in form shows, so a deep link
    # (/executions?task=...) survives it: the gate keeps its query and reruns once signed in.
    st.navigation([*pages, access], position="hidden")
me = login.gate(base_api(), show_unreachable)  # the sign-in form until there is a token
if known is None:
    st.rerun()  # now with the pages this caller may see
page = st.navigation(pages + ([access] if me.role >= pb.Role.ROLE_ADMIN else []))

with st.sidebar:
    st.selectbox("Show times in", fmt.time_zones(), key="display_tz")
    st.caption(f"api: `{api_addr()}`")
    st.caption(login.describe(me))
    if me.id and st.button("Sign out", icon=":material/logout:", key="sign_out"):
        login.sign_out()
        st.rerun()

page.run()
