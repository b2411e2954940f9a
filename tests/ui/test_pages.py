"""The task list, the log viewer and the overview against a real api (and, where executions
must happen, real scheduler and executor processes)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from schedcore import pb
from tests.integration import helpers
from tests.integration.engine_support import Suite, http, once_in, suite
from tests.integration.helpers import create, cron_task, get, list_all_tasks, rpc_error
from tests.support import RedisServer, free_port
from tests.ui.dash import open_page, rerun_ok, texts
from ui.common import rows_key

TASKS, EXECUTIONS = "views/tasks.py", "views/executions.py"
api = helpers.api
stub = helpers.stub


def table(at):  # type: ignore[no-untyped-def]
    [frame] = at.dataframe
    return frame.value


def test_list_filters_and_pages_server_side(api, stub, monkeypatch) -> None:
    for i in range(60):
        create(stub, cron_task(f"job-{i:02d}", labels={"team": "ops" if i % 2 else "web"}))
    at = open_page(monkeypatch, api.target, TASKS)
    at.selectbox(key="t_size").select(25)
    rerun_ok(at)
    first = list(table(at)["Name"])
    assert first == [f"job-{i:02d}" for i in range(25)]
    assert "Page 1 · 1-25 of 60 · more follow" in texts(at)
    at.button(key="pager_tasks_next").click()
    rerun_ok(at)
    assert list(table(at)["Name"]) == [f"job-{i:02d}" for i in range(25, 50)]
    at.button(key="pager_tasks_next").click()
    rerun_ok(at)
    assert list(table(at)["Name"]) == [f"job-{i:02d}" for i in range(50, 60)]
    assert "Page 3 · 51-60 of 60" in texts(at)
    assert at.button(key="pager_tasks_next").disabled
    at.button(key="pager_tasks_prev").click()
    rerun_ok(at)
    assert list(table(at)["Name"]) == [f"job-{i:02d}" for i in range(25, 50)]
    # A filter starts again from the first page, and the api does the filtering.
    at.text_input(key="t_labels").input("team=ops")
    at.text_input(key="t_needle").input("job-1")
    rerun_ok(at)
    assert list(table(at)["Name"]) == [f"job-{i}" for i in range(11, 20, 2)]
    assert set(table(at)["Labels"]) == {"team=ops"}
    # The api counts no label or name filter (no index to count by): no total, not a made-up one.
    assert [c.value for c in at.caption if c.value.startswith("Page ")] == ["Page 1 · 1-5"]
    at.text_input(key="t_needle").input("nothing-like-this")
    rerun_ok(at)
    assert "No task matches these filters" in texts(at)


def test_empty_list_says_how_to_start(api, stub, monkeypatch) -> None:
    at = open_page(monkeypatch, api.target, TASKS)
    assert "No tasks yet" in texts(at)


def test_actions_pause_resume_run_edit_delete(api, stub, monkeypatch) -> None:
    task = create(stub, cron_task("nightly", expression="0 3 * * *"))
    other = create(stub, cron_task("other"))
    at = open_page(monkeypatch, api.target, TASKS)
    frame = table(at)
    assert list(frame["Name"]) == ["nightly", "other"]
    assert frame["Schedule"][0] == "At 03:00 (UTC)"
    at.selectbox(key="t_pick").select(task.id)
    rerun_ok(at)

    at.button(key="t_pause").click()
    rerun_ok(at)
    assert get(stub, task.id).state == pb.TaskState.TASK_STATE_PAUSED
    assert "Paused nightly" in texts(at)
    assert list(table(at)["State"]) == ["paused", "active"]
    at.button(key="t_resume").click()
    rerun_ok(at)
    assert get(stub, task.id).state == pb.TaskState.TASK_STATE_ACTIVE

    at.button(key="t_run").click()
    rerun_ok(at)
    runs = stub.ListExecutions(pb.ListExecutionsRequest(task_id=task.id)).executions
    assert len(runs) == 1 and runs[0].trigger == pb.ExecutionTrigger.EXECUTION_TRIGGER_MANUAL

    # Delete asks first; Cancel keeps the task.
    at.button(key="t_delete").click()
    rerun_ok(at)
    assert any("Delete **nightly**?" in w.value for w in at.warning)
    at.button(key="t_confirm_no").click()
    rerun_ok(at)
    assert get(stub, task.id).name == "nightly"
    at.button(key="t_delete").click()
    rerun_ok(at)
    at.button(key="t_confirm_yes").click()
    rerun_ok(at)
    rpc_error(lambda: stub.GetTask(pb.GetTaskRequest(id=task.id)), grpc.StatusCode.NOT_FOUND)
    assert list(table(at)["Name"]) == ["other"]
    assert [t.id for t in list_all_tasks(stub)] == [other.id]

    # Edit goes to the form with the task loaded.
    at.button(key="t_edit").click()
    rerun_ok(at)
    assert at.text_input(key="e_name").value == "other"


@pytest.fixture()
def live(redis_srv: RedisServer, rds) -> Iterator[Suite]:
    with suite(redis_srv) as s:
        yield s


def test_executions_show_in_the_log_viewer_and_overview(live: Suite, monkeypatch) -> None:
    ok = live.create("say hello", once_in(0.3), payload=None)
    refused = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there: it fails
    bad = live.create("broken hook", once_in(0.3), http(refused))
    [done] = live.wait_terminal(ok.id, 1)
    [failed] = live.wait_terminal(bad.id, 1)
    assert failed.status == pb.ExecutionStatus.EXECUTION_STATUS_FAILED

    at = open_page(monkeypatch, live.api.target, EXECUTIONS)
    frame = table(at)
    assert set(frame["Task"]) == {"say hello", "broken hook"}
    assert set(frame["Status"]) == {"succeeded", "failed"}
    # Filter by status, then open one execution's detail.
    at.selectbox(key="x_status").select("Failed")
    rerun_ok(at)
    assert list(table(at)["ID"]) == [failed.id]
    at.text_input(key="x_open").input(failed.id)
    rerun_ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "failed" and metrics["Attempt"] == "1"
    assert any(failed.status_message in e.value for e in at.error), texts(at)
    # A task can be found by (part of) its name.
    at.selectbox(key="x_status").select("All")
    at.text_input(key="x_task").input("hello")
    rerun_ok(at)
    assert at.selectbox(key="x_match").value == ok.id
    assert list(table(at)["ID"]) == [done.id]
    # The task filter comes from the link on the task list.
    at = open_page(monkeypatch, live.api.target, EXECUTIONS, task=ok.id)
    assert list(table(at)["ID"]) == [done.id]
    at.text_input(key="x_open").input(done.id)
    rerun_ok(at)
    assert {m.label: m.value for m in at.metric}["Status"] == "succeeded"
    assert any(ok.id in j.value for j in at.json), "the output (the log record) is shown"

    overview = open_page(monkeypatch, live.api.target)
    metrics = {m.label: m.value for m in overview.metric}
    assert metrics["Completed tasks"] == "2"
    assert metrics["Ended"] == "2"
    assert metrics["Success rate"] == "50.0 %"
    assert metrics["Lag p99"] != "—"
    assert len(overview.get("vega_lite_chart")) == 1, "the chart of executions over time"
    for window, span_s in (("Last hour", 3600), ("Last 24 hours", 86400)):
        overview.segmented_control(key="ov_window").set_value(window)
        rerun_ok(overview)
        [chart] = overview.get("vega_lite_chart")
        x = json.loads(chart.proto.spec)["encoding"]
        # The whole window on the axis (not only the minutes that had executions), and each bar
        # as wide as its bucket.
        low, high = x["x"]["scale"]["domain"]
        assert high - low == span_s * 1000, x["x"]
        assert x["x2"]["field"] == "end"
    [quotas] = overview.dataframe
    [row] = quotas.value.to_dict("records")
    assert row["Bytes"] > 0
    assert row == {
        "Namespace": "default",
        "Tasks": 2,
        "Limit": "100000",
        "Used": "0.0 %",
        "Bytes": row["Bytes"],
        "Bytes limit": str(256 * 1024 * 1024),
        "Runs this minute": 0,
        "Runs limit": "600 / min",
    }, "each namespace's usage against its quotas"
    recent = texts(overview)
    assert "broken hook" in recent and "say hello" not in recent, "each failure names its task"
    links = [p for p in overview.get("page_link")]
    assert any(failed.id in str(p.proto) for p in links), "each failure links to its log"


def test_an_execution_is_cancelled_and_rerun_from_its_detail(api, stub, monkeypatch) -> None:
    task = create(stub, cron_task("nightly", expression="0 3 * * *"))
    run = stub.RunTask(pb.RunTaskRequest(id=task.id)).execution  # PENDING: no scheduler here
    at = open_page(monkeypatch, api.target, EXECUTIONS, id=run.id)
    at.button(key="x_cancel").click()
    rerun_ok(at)
    assert "Cancel asked" in texts(at)
    cancelled = stub.GetExecution(pb.GetExecutionRequest(id=run.id)).execution
    assert cancelled.status == pb.ExecutionStatus.EXECUTION_STATUS_CANCELLED
    assert cancelled.status_message == "cancelled: CancelExecution: from the dashboard"
    assert at.button(key="x_cancel").disabled  # it has ended
    at.button(key="x_rerun").click()
    rerun_ok(at)
    runs = stub.ListExecutions(pb.ListExecutionsRequest(task_id=task.id)).executions
    [again] = [e for e in runs if e.rerun_of == run.id]
    assert at.text_input(key="x_open").value == again.id  # the rerun is opened
    assert again.status == pb.ExecutionStatus.EXECUTION_STATUS_PENDING
    audit = open_page(monkeypatch, api.target, "views/audit.py")
    actions = list(audit.dataframe[0].value["Action"])
    assert actions[:2] == ["reran execution", "cancelled execution"], actions


def test_a_refresh_keeps_the_opened_execution_when_a_newer_one_takes_its_row(api, stub, monkeypatch) -> None:
    task = create(stub, cron_task("nightly", expression="0 3 * * *"))
    first = stub.RunTask(pb.RunTaskRequest(id=task.id)).execution
    at = open_page(monkeypatch, api.target, EXECUTIONS)
    at.toggle(key="x_live").set_value(True)
    rerun_ok(at)
    assert list(table(at)["ID"]) == [first.id]
    at.session_state[rows_key("x_table", [first.id])] = {"selection": {"rows": [0], "columns": []}}
    rerun_ok(at)  # the row is clicked
    assert at.text_input(key="x_open").value == first.id
    newer = stub.RunTask(pb.RunTaskRequest(id=task.id)).execution
    rerun_ok(at)  # the refresh: the newer execution is row 0 now
    assert list(table(at)["ID"]) == [newer.id, first.id]
    assert at.text_input(key="x_open").value == first.id
    assert {m.label: m.value for m in at.metric}["Status"] == "pending"
    assert first.id in texts(at)
