"""Namespaces: tasks and executions belong to one; a token limited to a namespace sees and changes
only what is in it (docs/security.md), against a real api with AUTH_MODE=token."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest
import redis
from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import pb
from schedcore.store.engine import DueTask
from schedcore.store.keys import Keys
from services.scheduler.plan import plan
from tests.integration.auth_support import (
    ADMIN,
    EDITOR,
    VIEWER,
    AuthApi,
    Caller,
)
from tests.integration.helpers import (
    create,
    cron_task,
    invalid,
    list_all_executions,
    list_all_tasks,
    now_ms,
    once_task,
    rpc_error,
    snapshot,
)

DENIED = grpc.StatusCode.PERMISSION_DENIED


@dataclass
class Teams:
    admin: Caller
    a: Caller  # editor limited to namespace team-a
    b: Caller  # editor limited to namespace team-b
    a_viewer: Caller
    task_a: pb.Task
    task_b: pb.Task
    task_default: pb.Task
    run_a: pb.Execution
    run_b: pb.Execution


@pytest.fixture()
def teams(auth_api: AuthApi) -> Teams:
    admin = auth_api.admin
    a = admin.as_token(admin.new_token("team a", EDITOR, "team-a")[1])
    b = admin.as_token(admin.new_token("team b", EDITOR, "team-b")[1])
    a_viewer = admin.as_token(admin.new_token("team a viewer", VIEWER, "team-a")[1])
    task_a = create(a.tasks, cron_task("a"))  # type: ignore[arg-type]
    task_b = create(b.tasks, cron_task("b"))  # type: ignore[arg-type]
    task_default = create(admin.tasks, cron_task("d"))  # type: ignore[arg-type]
    run_a = a.tasks.RunTask(pb.RunTaskRequest(id=task_a.id)).execution
    run_b = b.tasks.RunTask(pb.RunTaskRequest(id=task_b.id)).execution
    return Teams(admin, a, b, a_viewer, task_a, task_b, task_default, run_a, run_b)


def test_tasks_and_executions_take_the_namespace_of_the_token_or_default(teams: Teams) -> None:
    assert (teams.task_a.namespace, teams.task_b.namespace, teams.task_default.namespace) == (
        "team-a",
        "team-b",
        "default",
    )
    assert teams.run_a.namespace == "team-a"
    got = teams.admin.tasks.GetExecution(pb.GetExecutionRequest(id=teams.run_b.id)).execution
    assert got.namespace == "team-b"
    assert teams.admin.tasks.GetTask(pb.GetTaskRequest(id=teams.task_a.id)).task.namespace == "team-a"
    # A cluster-wide token picks any namespace.
    other = create(teams.admin.tasks, cron_task("elsewhere", namespace="team-c"))  # type: ignore[arg-type]
    assert other.namespace == "team-c"
    # A namespaced token may name its own.
    assert create(teams.a.tasks, cron_task("own", namespace="team-a")).namespace == "team-a"  # type: ignore[arg-type]


def test_scheduled_executions_carry_their_tasks_namespace() -> None:
    spec = once_task("x", in_s=-1, namespace="team-a")
    spec.id = "0123456789abcdef"
    fired = plan(DueTask(spec.id, now_ms() - 1000, spec, "1"), now_ms(), 10_000)
    assert [r.namespace for r in fired.records] == ["team-a"]
    spec.ClearField("namespace")  # a task stored before namespaces existed
    fired = plan(DueTask(spec.id, now_ms() - 1000, spec, "1"), now_ms(), 10_000)
    assert [r.namespace for r in fired.records] == ["default"]


def test_another_namespace_is_refused_on_every_task_rpc_and_nothing_changes(
    teams: Teams, rds: redis.Redis
) -> None:
    a, b_id, run_b = teams.a, teams.task_b.id, teams.run_b.id
    calls = {
        "GetTask": lambda: a.tasks.GetTask(pb.GetTaskRequest(id=b_id)),
        "UpdateTask": lambda: a.tasks.UpdateTask(pb.UpdateTaskRequest(task=pb.Task(id=b_id, name="mine"))),
        "DeleteTask": lambda: a.tasks.DeleteTask(pb.DeleteTaskRequest(id=b_id)),
        "PauseTask": lambda: a.tasks.PauseTask(pb.PauseTaskRequest(id=b_id)),
        "ResumeTask": lambda: a.tasks.ResumeTask(pb.ResumeTaskRequest(id=b_id)),
        "RunTask": lambda: a.tasks.RunTask(pb.RunTaskRequest(id=b_id)),
        "GetExecution": lambda: a.tasks.GetExecution(pb.GetExecutionRequest(id=run_b)),
        "RerunExecution": lambda: a.tasks.RerunExecution(pb.RerunExecutionRequest(id=run_b)),
        "ListExecutions by task": lambda: a.tasks.ListExecutions(pb.ListExecutionsRequest(task_id=b_id)),
        "ListExecutions of b": lambda: a.tasks.ListExecutions(pb.ListExecutionsRequest(namespace="team-b")),
        "ListTasks of b": lambda: a.tasks.ListTasks(pb.ListTasksRequest(namespace="team-b")),
        "ListAuditEvents of b": lambda: a.audit.ListAuditEvents(
            pb.ListAuditEventsRequest(namespace="team-b")
        ),
        "CreateTask in b": lambda: a.tasks.CreateTask(
            pb.CreateTaskRequest(task=cron_task("x", namespace="team-b"))
        ),
        "BatchCreateTasks with one in b": lambda: a.tasks.BatchCreateTasks(
            pb.BatchCreateTasksRequest(
                requests=[
                    pb.CreateTaskRequest(task=cron_task("fine")),
                    pb.CreateTaskRequest(task=cron_task("x", namespace="team-b")),
                ]
            )
        ),
        "GetStats": lambda: a.tasks.GetStats(pb.GetStatsRequest()),
    }
    before = snapshot(rds)
    for name, call in calls.items():
        err = rpc_error(call, DENIED)
        assert err.details(), name
    assert snapshot(rds) == before
    # The same calls on its own namespace work (GetStats aside: cluster-wide).
    assert a.tasks.GetTask(pb.GetTaskRequest(id=teams.task_a.id)).task.name == "a"
    assert (
        a.tasks.PauseTask(pb.PauseTaskRequest(id=teams.task_a.id)).task.state
        == pb.TaskState.TASK_STATE_PAUSED
    )


def test_lists_show_a_namespaced_token_only_its_own(teams: Teams) -> None:
    assert [t.id for t in list_all_tasks(teams.a.tasks)] == [teams.task_a.id]  # type: ignore[arg-type]
    assert [t.id for t in list_all_tasks(teams.a.tasks, namespace="team-a")] == [teams.task_a.id]  # type: ignore[arg-type]
    assert [e.id for e in list_all_executions(teams.a_viewer.tasks)] == [teams.run_a.id]  # type: ignore[arg-type]
    # A cluster-wide token sees everything, or one namespace when it asks.
    assert len(list_all_tasks(teams.admin.tasks)) == 3  # type: ignore[arg-type]
    assert [t.id for t in list_all_tasks(teams.admin.tasks, namespace="team-b")] == [teams.task_b.id]  # type: ignore[arg-type]
    assert [t.id for t in list_all_tasks(teams.admin.tasks, namespace="default")] == [teams.task_default.id]  # type: ignore[arg-type]
    assert [e.id for e in list_all_executions(teams.admin.tasks, namespace="team-b")] == [teams.run_b.id]  # type: ignore[arg-type]
    assert len(list_all_executions(teams.admin.tasks)) == 2  # type: ignore[arg-type]
    invalid(lambda: teams.admin.tasks.ListTasks(pb.ListTasksRequest(namespace="Bad!")), "namespace")


def test_namespace_is_validated_and_fixed_at_creation(teams: Teams) -> None:
    admin = teams.admin
    invalid(lambda: create(admin.tasks, cron_task("x", namespace="Team_A")), "task.namespace")  # type: ignore[arg-type]
    invalid(lambda: create(admin.tasks, cron_task("x", namespace="a" * 64)), "task.namespace")  # type: ignore[arg-type]
    invalid(lambda: create(admin.tasks, cron_task("x", namespace="trailing-")), "task.namespace")  # type: ignore[arg-type]
    task_id = teams.task_a.id
    invalid(
        lambda: admin.tasks.UpdateTask(
            pb.UpdateTaskRequest(
                task=pb.Task(id=task_id, namespace="team-b"), update_mask=FieldMask(paths=["namespace"])
            )
        ),
        "update_mask",
    )
    invalid(
        lambda: admin.tasks.UpdateTask(
            pb.UpdateTaskRequest(task=pb.Task(id=task_id, name="n", namespace="team-b"))
        ),
        "task.namespace",
    )
    # Sending the task back as read (namespace unchanged) is fine, and the namespace stays.
    read = admin.tasks.GetTask(pb.GetTaskRequest(id=task_id)).task
    read.name = "renamed"
    updated = admin.tasks.UpdateTask(
        pb.UpdateTaskRequest(task=read, update_mask=FieldMask(paths=["name"]))
    ).task
    assert (updated.name, updated.namespace) == ("renamed", "team-a")
    star = admin.tasks.UpdateTask(
        pb.UpdateTaskRequest(task=cron_task("all", id=task_id), update_mask=FieldMask(paths=["*"]))
    ).task
    assert star.namespace == "team-a"


def test_a_task_stored_without_a_namespace_counts_as_default(teams: Teams, rds: redis.Redis) -> None:
    key = Keys().task(teams.task_default.id)
    spec = pb.Task.FromString(rds.hget(key, "spec"))  # type: ignore[arg-type]
    spec.ClearField("namespace")
    rds.hset(key, "spec", spec.SerializeToString())
    assert teams.admin.tasks.GetTask(pb.GetTaskRequest(id=spec.id)).task.namespace == "default"
    _, secret = teams.admin.new_token("default team", EDITOR, "default")
    mine = teams.admin.as_token(secret)
    assert [t.id for t in list_all_tasks(mine.tasks)] == [spec.id]  # type: ignore[arg-type]
    run = mine.tasks.RunTask(pb.RunTaskRequest(id=spec.id)).execution
    assert run.namespace == "default"
    rpc_error(lambda: teams.a.tasks.GetTask(pb.GetTaskRequest(id=spec.id)), DENIED)


def test_a_namespaced_admin_manages_only_its_namespaces_tokens(teams: Teams, rds: redis.Redis) -> None:
    admin = teams.admin
    a_admin = admin.as_token(admin.new_token("a admin", ADMIN, "team-a")[1])
    b_token, _ = admin.new_token("b viewer", VIEWER, "team-b")
    before = snapshot(rds)
    rpc_error(lambda: a_admin.new_token("everywhere", VIEWER), DENIED)
    rpc_error(lambda: a_admin.new_token("in b", VIEWER, "team-b"), DENIED)
    rpc_error(lambda: a_admin.auth.RevokeToken(pb.RevokeTokenRequest(id=b_token.id)), DENIED)
    boot = admin.auth.WhoAmI(pb.WhoAmIRequest()).token
    rpc_error(lambda: a_admin.auth.RevokeToken(pb.RevokeTokenRequest(id=boot.id)), DENIED)
    assert snapshot(rds) == before
    made, _ = a_admin.new_token("a ci", EDITOR, "team-a")
    assert made.created_by == "a admin"
    listed = {t.name for t in a_admin.auth.ListTokens(pb.ListTokensRequest(show_revoked=True)).tokens}
    assert listed == {"team a", "team a viewer", "a admin", "a ci"}
    a_admin.auth.RevokeToken(pb.RevokeTokenRequest(id=made.id))


def test_request_ids_are_scoped_to_the_namespace(teams: Teams) -> None:
    """The same request id in two namespaces makes two tasks: a repeat is recognised only within
    its namespace, so no team learns of another's task (nor is refused because of it)."""

    def create_with(caller: Caller, name: str, namespace: str = "") -> pb.Task:
        request = pb.CreateTaskRequest(task=cron_task(name, namespace=namespace), request_id="nightly-import")
        return caller.tasks.CreateTask(request).task

    mine = create_with(teams.a, "import")
    theirs = create_with(teams.b, "import")  # same contents but the namespace: a different task
    assert (mine.namespace, theirs.namespace) == ("team-a", "team-b")
    assert mine.id != theirs.id
    assert create_with(teams.b, "import").id == theirs.id, "a repeat within team-b gives team-b's task"
    assert create_with(teams.a, "import").id == mine.id, "a repeat within team-a gives team-a's task"
    with pytest.raises(grpc.RpcError) as refused:
        create_with(teams.b, "something else")
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert theirs.id in refused.value.details() and mine.id not in refused.value.details()
    batch = pb.BatchCreateTasksRequest(
        requests=[pb.CreateTaskRequest(task=cron_task("import"), request_id="nightly-import")]
    )
    assert [t.id for t in teams.b.tasks.BatchCreateTasks(batch).tasks] == [theirs.id], "batches alike"
    # The default namespace keeps its keys as before namespaces existed (no duplicate on upgrade).
    default = create_with(teams.admin, "import")
    assert default.namespace == "default" and default.id not in (mine.id, theirs.id)
    assert create_with(teams.admin, "import", namespace="default").id == default.id


def test_a_refusal_on_another_namespaces_task_does_not_name_that_namespace(teams: Teams) -> None:
    """A caller learns that it may not touch the task, not where the task lives."""
    a, b_id, run_b = teams.a, teams.task_b.id, teams.run_b.id
    calls = {
        "GetTask": lambda: a.tasks.GetTask(pb.GetTaskRequest(id=b_id)),
        "UpdateTask": lambda: a.tasks.UpdateTask(pb.UpdateTaskRequest(task=pb.Task(id=b_id, name="mine"))),
        "DeleteTask": lambda: a.tasks.DeleteTask(pb.DeleteTaskRequest(id=b_id)),
        "PauseTask": lambda: a.tasks.PauseTask(pb.PauseTaskRequest(id=b_id)),
        "RunTask": lambda: a.tasks.RunTask(pb.RunTaskRequest(id=b_id)),
        "GetExecution": lambda: a.tasks.GetExecution(pb.GetExecutionRequest(id=run_b)),
        "RerunExecution": lambda: a.tasks.RerunExecution(pb.RerunExecutionRequest(id=run_b)),
        "ListExecutions by task": lambda: a.tasks.ListExecutions(pb.ListExecutionsRequest(task_id=b_id)),
    }
    for name, call in calls.items():
        err = rpc_error(call, DENIED)
        metadata = err.trailing_metadata() or ()
        trailers = b"".join(v if isinstance(v, bytes) else v.encode() for _, v in metadata)
        assert "team-b" not in (err.details() or ""), (name, err.details())
        assert b"team-b" not in trailers, name
        assert "team-a" in (err.details() or ""), (name, err.details())  # what the caller may see
