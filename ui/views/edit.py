"""Create or edit a task: one form, a live schedule preview, errors next to their fields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import streamlit as st

from schedcore.store.keys import DEFAULT_NAMESPACE
from ui import alerts, login
from ui import format as fmt
from ui import taskform as tf
from ui.client import ApiError
from ui.common import api, page_guard, show_unreachable, zone
from ui.fielderrors import FormErrors

ERRORS = FormErrors("e", tf.FIELD_WIDGETS)  # from the last save attempt
KEYS = list(tf.defaults(datetime.now(UTC)))
SCHEDULE_KEYS = ("e_kind", "e_cron", "e_every", "e_date", "e_time", "e_second", "e_tz")


def load(values: dict[str, Any], marker: object, etag: str = "") -> None:
    """Put a task's (or a blank form's) values into the widgets, once per task: a change made
    elsewhere while the form is open does not replace what the user typed. `etag`: the version
    the form was loaded from, which the save sends, so such a change makes the save fail (ABORTED)
    instead of being overwritten unseen.

    Streamlit forgets the value of a widget that a run does not render (the one-time fields
    while the cron ones show, every field after a visit to another page), so the values are
    also kept in `e_values` and restored from there."""
    if st.session_state.get("e_loaded") != marker:
        st.session_state["e_values"] = dict(values)
        st.session_state["e_loaded"] = marker
        st.session_state["e_etag"] = etag
        ERRORS.clear()
        st.session_state["e_request_id"] = str(uuid.uuid4())
        st.session_state.update(values)
    for key, value in st.session_state["e_values"].items():
        if key not in st.session_state:
            st.session_state[key] = value


def current() -> dict[str, Any]:
    """The form's values: what the widgets hold, else what was kept."""
    kept: dict[str, Any] = st.session_state.get("e_values", {})
    values = {k: st.session_state[k] if k in st.session_state else kept[k] for k in KEYS}
    kept.update(values)
    return values


def save(editing: Any, overwrite: bool = False) -> None:
    """The Save button's callback: runs before the page renders, so errors land by their fields.
    An edit is saved against the version the form was loaded from; `overwrite`: against the
    current one, replacing a change made meanwhile with the form's values.

    With errors the form finds itself (a malformed header), the request is still sent, as
    validate_only with those fields left empty, so the api's errors (a bad URL) show with them
    in one round, not after the first ones are fixed."""
    task, errors = tf.to_task(current())
    ERRORS.start(errors)
    if editing is not None:
        task.id = editing.id
        task.etag = editing.etag if overwrite else st.session_state.get("e_etag", editing.etag)
    try:
        if editing is None:
            saved = api().create_task(task, st.session_state["e_request_id"], validate_only=bool(errors))
            verb = "Created"
        else:
            saved = api().update_task(task, tf.UPDATE_PATHS, validate_only=bool(errors))
            verb = "Saved"
    except ApiError as err:
        if errors and err.code != grpc.StatusCode.INVALID_ARGUMENT:
            return  # not saved anyway; what the form found is shown, the rest after a retry
        ERRORS.refused(err, errors)
        return
    if errors:
        return
    st.session_state["e_flash"] = (
        f"{verb} task **{saved.name}** (`{saved.id}`); next run {fmt.ts(saved.next_run_time, zone())}."
    )
    st.session_state["edit_id"] = saved.id
    st.session_state["e_loaded"] = None  # reload from what the api stored


def namespace() -> str:
    """Where a new task goes: the token's namespace, or default (as the api decides)."""
    me = login.who()
    return (me.namespace if me is not None else "") or DEFAULT_NAMESPACE


def reload() -> None:
    """Discard the form's edits: the next run loads the task as the api has it now."""
    st.session_state["e_loaded"] = None


def cloned(task_id: str) -> dict[str, Any]:
    """A new task's form filled from task `task_id` (the task page's Clone). Secret header values
    and signing secrets are not copied: the api never returns them."""
    with page_guard():
        source = api().get_task(task_id)
    values = tf.from_task(source, datetime.now(UTC))
    values.update(e_name=f"{source.name} (copy)", e_secret_headers="", e_signing=0)
    return values


if not login.can_edit():
    st.title("Create a task")
    st.info(
        "Your token has the viewer role: it can read tasks and executions but not create or change "
        "them. Ask an admin for an editor token.",
        icon=":material/visibility:",
    )
    st.stop()

edit_id = st.query_params.get("id") or st.session_state.get("edit_id")
editing = None
if edit_id:
    with page_guard():
        try:
            editing = api().get_task(edit_id)
        except ApiError as err:
            if err.unreachable:
                raise
            st.warning(f"Task `{edit_id}` cannot be edited: {err.message}. Starting a new task instead.")
            st.session_state.pop("edit_id", None)
clone_id = st.session_state.get("e_clone") if editing is None else None
if editing is not None:
    st.session_state.pop("e_clone", None)
    load(tf.from_task(editing, datetime.now(UTC)), editing.id, editing.etag)
elif clone_id:
    load(cloned(clone_id), ("clone", clone_id))
else:
    load(tf.defaults(datetime.now(UTC), zone()), "new")

if editing is not None and editing.etag != st.session_state.get("e_etag") and not ERRORS.general_refusal():
    st.warning(
        "This task was changed by someone else since you opened it. Saving will ask whether to "
        "reload it or save your edits over it.",
        icon=":material/sync_problem:",
    )
head, new = st.columns([5, 1])
head.title(f"Edit {editing.name}" if editing is not None else "Create a task")
if editing is not None and new.button("New task", icon=":material/add:", width="stretch"):
    st.session_state.pop("edit_id", None)
    st.session_state.pop("e_clone", None)
    st.query_params.clear()
    st.session_state["e_loaded"] = None
    st.rerun()
flash = st.session_state.pop("e_flash", None)
if flash:
    st.success(flash, icon=":material/check_circle:")
    st.page_link("views/tasks.py", label="Back to the task list", icon=":material/list:")
ERRORS.show_general("task", editing is not None, reload, save, (editing, True))

st.subheader("Task")
c1, c2 = st.columns([2, 3])
c1.text_input("Name", key="e_name", max_chars=200, placeholder="nightly-report")
with c1:
    ERRORS.show("e_name")
c2.text_input(
    "Labels", key="e_labels", placeholder="team=ops, env=prod", help="key=value pairs, comma separated"
)
with c2:
    ERRORS.show("e_labels")
st.text_area("Description", key="e_desc", height=68)
ERRORS.show("e_desc")

st.subheader("Schedule")
kind = st.radio("Kind", [tf.RECURRING, tf.INTERVAL, tf.ONE_TIME], key="e_kind", horizontal=True)
ERRORS.show("e_kind")
if kind == tf.RECURRING:
    s1, s2 = st.columns([2, 2])
    s1.text_input(
        "Cron expression",
        key="e_cron",
        help="Five fields (minute hour day month weekday), or six with seconds last: `*/10 * * * * *`",
    )
    s2.selectbox("Time zone", fmt.time_zones(), key="e_tz")
    with s1:
        ERRORS.show("e_cron")
    with s2:
        ERRORS.show("e_tz")
elif kind == tf.INTERVAL:
    s1, s2 = st.columns([2, 2])
    s1.number_input(
        "Every (seconds)",
        key="e_every",
        min_value=1.0,
        step=1.0,
        help="1 second to 366 days; runs at the start time + k x this period (the start: now, or "
        "the stored one when editing)",
    )
    with s1:
        ERRORS.show("e_every")
else:
    s1, s2, s3, s4 = st.columns([3, 2, 1, 3])
    s1.date_input("Date", key="e_date")
    s2.time_input("Time", key="e_time", step=60)
    # Streamlit's time picker steps by a minute at least: the seconds are a field of their own.
    s3.number_input("Second", min_value=0, max_value=59, step=1, key="e_second")
    s4.selectbox("Time zone", fmt.time_zones(), key="e_tz")
    ERRORS.show("e_time")

# The next fire times, from the api, whenever the schedule changes (each edit reruns the page).
schedule = tf.schedule_of(current())
words = fmt.schedule(schedule, st.session_state["e_tz"])
try:
    upcoming = api().preview(schedule, 5)
except ApiError as err:
    if err.unreachable:
        show_unreachable(err)
    elif not ERRORS.any(*SCHEDULE_KEYS):  # said by its field
        st.error(
            f"Invalid schedule: {err.field_error('schedule') or err.message}", icon=":material/schedule:"
        )
else:
    tz = st.session_state["e_tz"]
    st.caption(f"**{words}** · next runs:")
    if upcoming:
        st.markdown("\n".join(f"- {fmt.when(ms, tz)}" for ms in upcoming))
    else:
        st.caption("none: this schedule has no future occurrence")

st.subheader("Target")
kinds = [tf.LOG, tf.HTTP] + ([tf.COMMAND] if st.session_state.get("e_command") else [])
target = st.radio("Type", kinds, key="e_target", horizontal=True)
if target == tf.HTTP:
    h1, h2, h3 = st.columns([1, 4, 1])
    h1.selectbox("Method", tf.METHODS, key="e_method")
    h2.text_input("URL", key="e_url", placeholder="https://example.com/hook")
    h3.number_input("Expected status", 0, 599, key="e_expected", help="0 = any 2xx")
    with h2:
        ERRORS.show("e_url")
    with h3:
        ERRORS.show("e_expected")
    b1, b2 = st.columns(2)
    b1.text_area("Headers", key="e_headers", placeholder="Content-Type: application/json", height=100)
    b2.text_area("Body", key="e_body", height=100)
    with b1:
        ERRORS.show("e_headers")
    with b2:
        ERRORS.show("e_body")
    b1.text_area(
        "Secret headers",
        key="e_secret_headers",
        placeholder="Authorization: Bearer ...",
        height=80,
        help="Write-only: saved tasks show names only. Leave a value blank to keep the stored one; "
        "remove the line to remove the header.",
    )
    with b1:
        ERRORS.show("e_secret_headers")
st.text_area(
    "Payload (JSON object)",
    key="e_payload",
    height=100,
    help="Recorded with each execution; a log target writes it to the execution's output",
)
ERRORS.show("e_payload")

st.subheader("Limits and retries")
r1, r2, r3, r4, r5, r6 = st.columns(6)
r1.number_input("Timeout (s)", min_value=0.001, max_value=86400.0, key="e_timeout")
r6.number_input(
    "Max jitter (s)",
    min_value=0.0,
    max_value=3600.0,
    key="e_jitter",
    help="Each run starts up to this much after its time, by a delay fixed per task and time",
)
r2.number_input("Max attempts", min_value=1, max_value=100, key="e_attempts")
r3.number_input("First backoff (s)", min_value=0.001, key="e_backoff")
r4.number_input("Max backoff (s)", min_value=0.001, key="e_max_backoff")
r5.number_input("Backoff multiplier", min_value=1.0, max_value=10.0, key="e_multiplier")
for key, col in (
    ("e_timeout", r1),
    ("e_attempts", r2),
    ("e_backoff", r3),
    ("e_max_backoff", r4),
    ("e_multiplier", r5),
    ("e_jitter", r6),
):
    with col:
        ERRORS.show(key)

st.subheader("Policies")
o1, o2, o3, o4, o5, o6 = st.columns(6)
o1.selectbox(
    "When runs overlap",
    tuple(tf.OVERLAP_CHOICES),
    key="e_overlap",
    help="An occurrence due while earlier runs are still active: run anyway, skip it, let one wait, "
    "or cancel the oldest (docs/scheduling.md, Overlap)",
)
o2.number_input(
    "Max concurrent (0: default)",
    min_value=0,
    max_value=100,
    key="e_max_concurrent",
    help="Runs of this task active at once; 0 means 1, or no limit with Allow",
)
o3.selectbox(
    "Late occurrences",
    tuple(tf.CATCH_UP_CHOICES),
    key="e_catch_up",
    help="Occurrences found late (the suite was down): which run; the others are recorded skipped",
)
o4.number_input(
    "Catch-up limit",
    min_value=1,
    max_value=100,
    key="e_catch_up_limit",
    help="With Run all: at most this many",
)
o5.number_input(
    "Catch-up window (s, 0: none)",
    min_value=0.0,
    max_value=366 * 86400.0,
    key="e_catch_up_window",
    help="Only occurrences at most this old when found may run",
)
o6.number_input(
    "Pause after failures (0: never)",
    min_value=0,
    max_value=1000,
    key="e_pause_after",
    help="The task pauses itself after this many executions in a row failed or timed out",
)
for key, col in (
    ("e_pause_after", o6),
    ("e_overlap", o1),
    ("e_max_concurrent", o2),
    ("e_catch_up", o3),
    ("e_catch_up_limit", o4),
    ("e_catch_up_window", o5),
):
    with col:
        ERRORS.show(key)

alerts.policy_section(editing.namespace if editing is not None else namespace(), ERRORS)

st.button(
    "Create task" if editing is None else "Save changes",
    type="primary",
    icon=":material/save:",
    key="e_save",
    on_click=save,
    args=(editing,),
)
current()  # keep what this run's widgets hold
