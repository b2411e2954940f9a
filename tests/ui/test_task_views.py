"""Run-history marks, the task page (/task?id=) and bulk actions on the task list."""

from __future__ import annotations

from schedcore import pb
from tests.integration import helpers
from tests.integration.helpers import create, cron_task
from tests.ui.dash import open_page, texts
from ui.common import rows_key

TASKS = "views/tasks.py"
api = helpers.api
stub = helpers.stub


def marks_html(at) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(m.value for m in at.markdown if "■" in m.value)


def test_the_picked_task_shows_its_last_runs_as_marks(api, stub, monkeypatch) -> None:
    task = create(stub, cron_task("busy"))
    quiet = create(stub, cron_task("quiet"))
    for _ in range(12):
        stub.RunTask(pb.RunTaskRequest(id=task.id))  # PENDING: no scheduler here
    at = open_page(monkeypatch, api.target, TASKS)
    at.selectbox(key="t_pick").select(task.id).run()
    shown = marks_html(at)
    assert shown.count("■") == 10  # the last 10, not all 12
    assert 'title="pending · ' in shown
    assert "Last 10 runs" in shown and "10 pending" in shown
    at.selectbox(key="t_pick").select(quiet.id).run()
    assert marks_html(at) == ""
    assert "No execution yet." in texts(at)


TASK = "views/task.py"


def test_the_task_page_shows_schedule_policies_history_and_audit(api, stub, monkeypatch) -> None:
    task = create(
        stub,
        cron_task(
            "nightly",
            expression="0 3 * * *",
            retry_policy=pb.RetryPolicy(max_attempts=3),
            pause_after_failures=5,
        ),
    )
    stub.RunTask(pb.RunTaskRequest(id=task.id))
    at = open_page(monkeypatch, api.target, TASK, id=task.id)
    shown = texts(at)
    assert "nightly" in [t.value for t in at.title]
    assert "At 03:00 (UTC)" in shown and "Next runs:" in shown
    assert "up to 3 attempts" in shown and "after 5 in a row" in shown and "No alerts." in shown
    assert marks_html(at).count("■") == 1
    frames = [f.value for f in at.dataframe]
    assert any("Status" in f and list(f["Status"]) == ["pending"] for f in frames)  # its executions
    assert any("Action" in f and "created task" in list(f["Action"]) for f in frames)  # its audit
    assert "No alert was raised about this task" in shown  # its notifications (Executions' table)

    at.button(key="tp_pause").click()
    at.run()
    assert helpers.get(stub, task.id).state == pb.TaskState.TASK_STATE_PAUSED
    assert "Paused nightly." in texts(at)
    at.button(key="tp_resume").click()
    at.run()
    assert helpers.get(stub, task.id).state == pb.TaskState.TASK_STATE_ACTIVE


def test_the_task_page_says_when_the_task_is_gone(api, stub, monkeypatch) -> None:
    at = open_page(monkeypatch, api.target, TASK, id="0123456789abcdef")
    assert "No task `0123456789abcdef`" in texts(at)


def test_clone_opens_the_edit_page_prefilled_as_a_new_task(api, stub, monkeypatch) -> None:
    task = create(stub, cron_task("nightly", expression="0 3 * * *"))
    at = open_page(monkeypatch, api.target, TASK, id=task.id)
    at.button(key="tp_clone").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="e_name").value == "nightly (copy)"
    assert at.text_input(key="e_cron").value == "0 3 * * *"
    assert "Create a task" in [t.value for t in at.title]


def test_bulk_pause_confirms_the_count_and_reports_each_failure(api, stub, monkeypatch) -> None:
    made = [create(stub, cron_task(f"job-{i}")) for i in range(4)]
    at = open_page(monkeypatch, api.target, TASKS)
    at.session_state[rows_key("t_table", [t.id for t in made])] = {
        "selection": {"rows": [0, 1, 2], "columns": []}
    }
    at.run()
    assert "3 tasks selected" in texts(at)
    at.button(key="t_bulk_pause").click()
    at.run()
    assert "Pause **3 tasks**?" in texts(at)
    stub.DeleteTask(pb.DeleteTaskRequest(id=made[1].id))  # gone before the confirmation
    at.button(key="t_bulk_yes").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    states = {t.name: helpers.get(stub, t.id).state for t in (made[0], made[2], made[3])}
    paused, active = pb.TaskState.TASK_STATE_PAUSED, pb.TaskState.TASK_STATE_ACTIVE
    assert states == {"job-0": paused, "job-2": paused, "job-3": active}
    shown = texts(at)
    assert "Paused 2 of 3 tasks." in shown
    assert f"job-1 (`{made[1].id}`): NOT_FOUND" in shown


def test_the_last_status_column_is_coloured_by_status(api, stub, monkeypatch) -> None:
    task = create(stub, cron_task("ran"))
    stub.RunTask(pb.RunTaskRequest(id=task.id))
    at = open_page(monkeypatch, api.target, TASKS)
    [frame] = at.dataframe
    assert list(frame.value["Last status"]) == ["pending"]
    assert "color: #6c8ebf" in frame.proto.arrow_data.styler.styles  # the styles travel with the table
