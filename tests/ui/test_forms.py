"""The create / edit page against a real api and Redis: what the form sends, and errors in place."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from schedcore import pb
from schedcore.store.keys import Keys
from tests.integration import helpers
from tests.integration.helpers import create, cron_task, get, list_all_tasks, snapshot
from tests.ui.dash import open_page, rerun_ok, texts
from ui import taskform as tf

EDIT = "views/edit.py"
api = helpers.api
stub = helpers.stub


def column_with(at, key: str):  # type: ignore[no-untyped-def]
    """The innermost column holding the widget `key`: where its error must show."""
    found = None
    for column in at.columns:
        if any(
            w.key == key
            for kind in ("text_input", "text_area", "selectbox", "number_input", "multiselect", "checkbox")
            for w in getattr(column, kind)
        ):
            found = column
    assert found is not None, f"no column holds {key}"
    return found


def test_create_recurring_task_with_preview(api, stub, monkeypatch) -> None:
    at = open_page(monkeypatch, api.target, EDIT)
    at.text_input(key="e_name").input("weekday report")
    at.text_input(key="e_labels").input("team=ops, env=prod")
    at.text_input(key="e_cron").input("0 9 * * 1-5")
    at.selectbox(key="e_tz").select("Europe/Berlin")
    rerun_ok(at)
    shown = texts(at)
    assert "At 09:00, Monday through Friday (Europe/Berlin)" in shown, shown
    # The next five fire times come from PreviewSchedule, in the schedule's zone.
    previews = [line for line in shown.splitlines() if line.strip().startswith("- ")]
    assert len(previews) == 5, shown
    assert all("09:00:00 CE" in p for p in previews), previews
    at.text_area(key="e_payload").input('{"report": "sales", "n": 3}')
    at.button(key="e_save").click()
    rerun_ok(at)
    assert any("Created task" in s.value for s in at.success), texts(at)
    [task] = list_all_tasks(stub)
    assert task.name == "weekday report"
    assert dict(task.labels) == {"team": "ops", "env": "prod"}
    assert task.schedule.cron.expression == "0 9 * * 1-5"
    assert task.schedule.cron.time_zone == "Europe/Berlin"
    assert task.target.HasField("log")
    assert dict(task.payload) == {"report": "sales", "n": 3}
    local = datetime.fromtimestamp(task.next_run_time.ToMilliseconds() / 1000, ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute, local.weekday() < 5) == (9, 0, True)
    # Saving again edits the task just created (the page switched to it): no duplicate.
    at.text_input(key="e_name").input("weekday report v2")
    at.button(key="e_save").click()
    rerun_ok(at)
    [again] = list_all_tasks(stub)
    assert again.id == task.id and again.name == "weekday report v2"


def one_time(at, name: str, day: date, clock: time) -> None:  # type: ignore[no-untyped-def]
    """Name a one-time task and set its time: the picker's minutes and the seconds field."""
    at.text_input(key="e_name").input(name)
    at.radio(key="e_kind").set_value(tf.ONE_TIME)
    rerun_ok(at)
    at.date_input(key="e_date").set_value(day)
    at.time_input(key="e_time").set_value(clock.replace(second=0))
    at.number_input(key="e_second").set_value(clock.second)


def test_create_one_time_http_task(api, stub, monkeypatch) -> None:
    at = open_page(monkeypatch, api.target, EDIT)
    day = date.today() + timedelta(days=2)
    one_time(at, "ping once", day, time(10, 30))
    at.selectbox(key="e_tz").select("America/New_York")
    at.radio(key="e_target").set_value(tf.HTTP)
    rerun_ok(at)
    at.selectbox(key="e_method").select("PUT")
    at.text_input(key="e_url").input("https://example.com/hook")
    at.text_area(key="e_headers").input("Content-Type: application/json\nX-Team: ops")
    at.text_area(key="e_body").input('{"hello": 1}')
    at.number_input(key="e_expected").set_value(204)
    at.number_input(key="e_attempts").set_value(3)
    at.number_input(key="e_timeout").set_value(5.0)
    at.button(key="e_save").click()
    rerun_ok(at)
    assert any("Created task" in s.value for s in at.success), texts(at)
    [task] = list_all_tasks(stub)
    want = datetime.combine(day, time(10, 30), ZoneInfo("America/New_York"))
    assert task.schedule.once.run_time.ToMilliseconds() == int(want.timestamp() * 1000)
    http = task.target.http
    assert http.method == pb.HttpMethod.HTTP_METHOD_PUT
    assert http.url == "https://example.com/hook"
    assert dict(http.headers) == {"Content-Type": "application/json", "X-Team": "ops"}
    assert http.body == b'{"hello": 1}'
    assert http.expected_status == 204
    assert task.retry_policy.max_attempts == 3
    assert task.timeout.ToMilliseconds() == 5000


def test_a_one_time_task_keeps_its_seconds(api, stub, monkeypatch) -> None:
    """The time picker steps by a minute; the seconds field beside it gives 12:34:56."""
    at = open_page(monkeypatch, api.target, EDIT)
    day = date.today() + timedelta(days=2)
    one_time(at, "to the second", day, time(12, 34, 56))
    rerun_ok(at)
    assert "12:34:56" in texts(at)  # the preview
    at.button(key="e_save").click()
    rerun_ok(at)
    [task] = list_all_tasks(stub)
    at_utc = datetime.fromtimestamp(task.schedule.once.run_time.ToMilliseconds() / 1000, UTC)
    assert (at_utc.date(), at_utc.time()) == (day, time(12, 34, 56))
    edit = open_page(monkeypatch, api.target, EDIT, id=task.id)
    assert edit.time_input(key="e_time").value == time(12, 34)
    assert edit.number_input(key="e_second").value == 56


def test_invalid_cron_shows_the_error_by_the_field_and_creates_nothing(api, stub, rds, monkeypatch) -> None:
    at = open_page(monkeypatch, api.target, EDIT)
    at.text_input(key="e_name").input("broken")
    at.text_input(key="e_cron").input("61 * * * *")
    rerun_ok(at)
    # The live preview says it is invalid as soon as the expression changes...
    assert any("Invalid schedule" in e.value for e in at.error), texts(at)
    before = snapshot(rds)
    at.button(key="e_save").click()
    rerun_ok(at)
    # ...and saving puts the api's field violation in the cron field's column.
    errors = [e.value for e in column_with(at, "e_cron").error]
    assert len(errors) == 1 and "61" in errors[0], errors
    assert len([e for e in at.error if "61" in e.value]) == 1, "said once, not again by the preview"
    assert not any("Created task" in s.value for s in at.success)
    assert list_all_tasks(stub) == []
    assert snapshot(rds) == before, "a rejected create changed Redis"


def test_client_side_errors_block_the_call(api, stub, rds, monkeypatch) -> None:
    at = open_page(monkeypatch, api.target, EDIT)
    at.text_input(key="e_name").input("bad payload")
    at.text_area(key="e_payload").input("{not json")
    at.text_input(key="e_labels").input("team")
    before = snapshot(rds)
    at.button(key="e_save").click()
    rerun_ok(at)
    shown = [e.value for e in at.error]
    assert any("not valid JSON" in e for e in shown), shown
    assert any("'team' is not key=value" in e for e in shown), shown
    assert list_all_tasks(stub) == [] and snapshot(rds) == before


def test_the_forms_errors_and_the_apis_show_in_one_round(api, stub, rds, monkeypatch) -> None:
    """A malformed header (found by the form) and a bad URL (found by the api): both after one
    Save, each by its field, and nothing is created."""
    at = open_page(monkeypatch, api.target, EDIT)
    at.text_input(key="e_name").input("two mistakes")
    at.radio(key="e_target").set_value(tf.HTTP)
    rerun_ok(at)
    at.text_input(key="e_url").input("ftp://example.com/file")
    at.text_area(key="e_headers").input("X-Team ops")
    before = snapshot(rds)
    at.button(key="e_save").click()
    rerun_ok(at)
    assert [e.value for e in column_with(at, "e_headers").error if "'X-Team ops'" in e.value], texts(at)
    url_errors = [e.value for e in column_with(at, "e_url").error]
    assert url_errors and "https://" in url_errors[0], texts(at)
    assert list_all_tasks(stub) == [] and snapshot(rds) == before
    # Fixing both saves: the validate-only round did not use up the request id.
    at.text_input(key="e_url").input("https://example.com/hook")
    at.text_area(key="e_headers").input("X-Team: ops")
    at.button(key="e_save").click()
    rerun_ok(at)
    assert "Created task" in texts(at)
    [task] = list_all_tasks(stub)
    assert dict(task.target.http.headers) == {"X-Team": "ops"}


def test_api_errors_land_by_their_fields(api, stub, monkeypatch) -> None:
    at = open_page(monkeypatch, api.target, EDIT)
    at.text_input(key="e_name").input("x")
    at.radio(key="e_target").set_value(tf.HTTP)
    rerun_ok(at)
    at.text_input(key="e_url").input("ftp://example.com/file")
    at.button(key="e_save").click()
    rerun_ok(at)
    url_errors = [e.value for e in column_with(at, "e_url").error]
    assert url_errors, texts(at)
    assert list_all_tasks(stub) == []


def test_edit_loads_the_task_and_saves_with_its_etag(api, stub, monkeypatch) -> None:
    spec = cron_task("nightly", expression="0 3 * * *", time_zone="Asia/Tokyo")
    spec.payload.update({"rows": 3, "ratio": 0.5, "each": [1, 2.5]})
    task = create(stub, spec)
    at = open_page(monkeypatch, api.target, EDIT, id=task.id)
    assert at.text_input(key="e_name").value == "nightly"
    # Whole numbers read back as typed (a Struct keeps them as doubles: 3.0).
    assert json.loads(at.text_area(key="e_payload").value) == {"rows": 3, "ratio": 0.5, "each": [1, 2.5]}
    shown = at.text_area(key="e_payload").value
    assert '"rows": 3' in shown and "3.0" not in shown and "1.0" not in shown
    assert at.text_input(key="e_cron").value == "0 3 * * *"
    assert at.selectbox(key="e_tz").value == "Asia/Tokyo"
    # Someone else edits the task meanwhile: the save is refused, not silently overwritten.
    stub.UpdateTask(pb.UpdateTaskRequest(task=pb.Task(id=task.id, description="theirs")))
    at.text_input(key="e_name").input("nightly v2")
    at.button(key="e_save").click()
    rerun_ok(at)
    assert "changed by someone else" in "\n".join(e.value for e in at.error), [e.value for e in at.error]
    assert get(stub, task.id).name == "nightly"
    at.button(key="e_reload").click()
    rerun_ok(at)
    assert at.text_area(key="e_desc").value == "theirs"
    assert at.text_input(key="e_name").value == "nightly"
    at.text_input(key="e_name").input("nightly v2")
    at.button(key="e_save").click()
    rerun_ok(at)
    assert get(stub, task.id).name == "nightly v2"
    assert get(stub, task.id).description == "theirs"


def test_a_change_made_meanwhile_keeps_the_typed_edit_and_refuses_the_save(api, stub, monkeypatch) -> None:
    """The page reruns when a field is left: the task read then has a new etag, and the form
    must neither reload over what was typed nor save it against the new version unseen."""
    task = create(stub, cron_task("nightly", expression="0 3 * * *"))
    at = open_page(monkeypatch, api.target, EDIT, id=task.id)
    stub.UpdateTask(
        pb.UpdateTaskRequest(
            task=pb.Task(id=task.id, retry_policy=pb.RetryPolicy(max_attempts=3)),
            update_mask={"paths": ["retry_policy"]},
        )
    )
    at.text_area(key="e_desc").input("mine")
    rerun_ok(at)  # leaving the field
    assert at.text_area(key="e_desc").value == "mine"
    assert "changed by someone else" in texts(at)
    at.button(key="e_save").click()
    rerun_ok(at)
    assert "changed by someone else" in "\n".join(e.value for e in at.error), [e.value for e in at.error]
    assert "Saved task" not in texts(at)
    stored = get(stub, task.id)
    assert (stored.description, stored.retry_policy.max_attempts) == ("", 3)
    assert at.text_area(key="e_desc").value == "mine"  # the edit is still in the form
    at.button(key="e_overwrite").click()
    rerun_ok(at)
    stored = get(stub, task.id)
    # Overwritten: the form's values, its attempts included, over the change made meanwhile.
    assert (stored.description, stored.retry_policy.max_attempts) == ("mine", 1)
    assert "Saved task" in texts(at)
    assert "changed by someone else" not in texts(at)


@pytest.mark.parametrize("page", [None, "views/tasks.py", EDIT, "views/executions.py"])
def test_unreachable_api_is_a_readable_message(monkeypatch, page) -> None:
    from tests.support import free_port

    at = open_page(monkeypatch, f"127.0.0.1:{free_port()}", page)
    assert not at.exception
    assert any("cannot be reached" in e.value for e in at.error), texts(at)


def test_dates_in_the_past_are_refused_in_place(api, stub, monkeypatch) -> None:
    at = open_page(monkeypatch, api.target, EDIT)
    at.text_input(key="e_name").input("too late")
    at.radio(key="e_kind").set_value(tf.ONE_TIME)
    rerun_ok(at)
    at.date_input(key="e_date").set_value(datetime.now(UTC).date() - timedelta(days=1))
    at.button(key="e_save").click()
    rerun_ok(at)
    assert any("past" in e.value for e in at.error), texts(at)
    assert list_all_tasks(stub) == []


def test_edit_shows_secret_header_names_and_keeps_values_left_blank(api, stub, rds, monkeypatch) -> None:
    task = cron_task("with secrets")
    task.target.http.url = "https://example.com/hook"
    task.target.http.secret_headers.update({"Authorization": "Bearer kept-secret", "X-Old": "gone"})
    task = create(stub, task)
    at = open_page(monkeypatch, api.target, EDIT, id=task.id)
    shown = at.text_area(key="e_secret_headers").value
    assert shown == "Authorization:\nX-Old:"
    assert "kept-secret" not in texts(at)
    at.text_area(key="e_secret_headers").input("Authorization:\nX-New: fresh")
    at.text_input(key="e_name").input("with secrets v2")
    at.button(key="e_save").click()
    rerun_ok(at)
    stored = pb.Task.FromString(rds.hget(Keys().task(task.id), "spec"))
    assert stored.name == "with secrets v2"
    assert dict(stored.target.http.secret_headers) == {
        "Authorization": "Bearer kept-secret",
        "X-New": "fresh",
    }


def test_policies_are_sent_and_loaded_back(api, stub, monkeypatch) -> None:
    at = open_page(monkeypatch, api.target, EDIT)
    at.text_input(key="e_name").input("careful")
    at.selectbox(key="e_overlap").select("Buffer one")
    at.number_input(key="e_max_concurrent").set_value(2)
    at.selectbox(key="e_catch_up").select("Run all (up to the limit)")
    at.number_input(key="e_catch_up_limit").set_value(3)
    at.number_input(key="e_catch_up_window").set_value(600.0)
    at.number_input(key="e_pause_after").set_value(4)
    at.button(key="e_save").click()
    rerun_ok(at)
    assert any("Created task" in s.value for s in at.success), texts(at)
    [task] = list_all_tasks(stub)
    assert task.overlap == pb.Overlap(policy=pb.OverlapPolicy.OVERLAP_POLICY_BUFFER_ONE, max_concurrent=2)
    assert task.catch_up.policy == pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_ALL
    assert task.catch_up.limit == 3 and task.catch_up.window.ToMilliseconds() == 600_000
    assert task.pause_after_failures == 4
    edit = open_page(monkeypatch, api.target, EDIT, id=task.id)
    assert edit.selectbox(key="e_overlap").value == "Buffer one"
    assert edit.number_input(key="e_max_concurrent").value == 2
    assert edit.selectbox(key="e_catch_up").value == "Run all (up to the limit)"
    assert edit.number_input(key="e_pause_after").value == 4
    # Back to the defaults: stored as unset.
    edit.selectbox(key="e_overlap").select("Allow")
    edit.number_input(key="e_max_concurrent").set_value(0)
    edit.selectbox(key="e_catch_up").select("Run the earliest")
    edit.number_input(key="e_catch_up_window").set_value(0.0)
    edit.number_input(key="e_pause_after").set_value(0)
    edit.button(key="e_save").click()
    rerun_ok(edit)
    again = get(stub, task.id)
    assert not again.HasField("overlap") and not again.HasField("catch_up")
    assert again.pause_after_failures == 0
