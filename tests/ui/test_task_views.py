"""Run-history marks, the task page (/task?id=) and bulk actions on the task list."""

from __future__ import annotations

from schedcore import pb
from tests.integration import helpers
from tests.integration.helpers import create, cron_task
from tests.ui.dash import open_page, texts

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
