"""Who may create command targets (docs/security.md, "Command targets"): admins, and tokens
created with allow_command_targets; any other editor is refused PERMISSION_DENIED on CreateTask,
BatchCreateTasks and an UpdateTask that makes or changes a command target, with Redis unchanged."""

from __future__ import annotations

import sys

import grpc
import redis
from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import pb
from schedcore.store.keys import Keys
from tests.integration.auth_support import ADMIN, EDITOR, VIEWER, AuthApi, Caller
from tests.integration.helpers import cron_task, rpc_error, snapshot

KEYS = Keys()
DENIED = grpc.StatusCode.PERMISSION_DENIED


def command(*args: str) -> pb.Target:
    return pb.Target(command=pb.CommandTarget(program=sys.executable, args=list(args)))


def command_task(name: str, *args: str) -> pb.Task:
    task = cron_task(name)
    task.target.CopyFrom(command("-c", "print(1)", *args))
    return task


def vouch_for_a_command_executor(rds: redis.Redis) -> None:
    """What a scheduler linked to an executor with EXECUTOR_COMMAND_TARGETS=true writes: without
    it every command task is refused FAILED_PRECONDITION, whoever asks."""
    seconds, _ = rds.time()
    rds.hset(KEYS.capabilities, "command", (int(seconds) + 3600) * 1000)


def refused(call: object, *names: str) -> str:
    err = rpc_error(call, DENIED)  # type: ignore[arg-type]
    details = err.details() or ""
    assert "allow_command_targets" in details, details
    for name in names:
        assert name in details, details
    return details


def test_an_editor_without_the_permission_is_refused_every_command_write_and_nothing_changes(
    auth_api: AuthApi, rds: redis.Redis
) -> None:
    vouch_for_a_command_executor(rds)
    admin = auth_api.admin
    _, secret = admin.new_token("plain editor", EDITOR)
    editor = admin.as_token(secret)
    log_task = editor.tasks.CreateTask(
        pb.CreateTaskRequest(task=cron_task("log"))
    ).task  # editors still write
    cmd_task = admin.tasks.CreateTask(pb.CreateTaskRequest(task=command_task("by admin"))).task
    before, size = snapshot(rds), rds.dbsize()

    refused(lambda: editor.tasks.CreateTask(pb.CreateTaskRequest(task=command_task("new"))), "task.target")
    batch = pb.BatchCreateTasksRequest(
        requests=[pb.CreateTaskRequest(task=cron_task("fine")), pb.CreateTaskRequest(task=command_task("no"))]
    )
    refused(lambda: editor.tasks.BatchCreateTasks(batch), "requests[1].task.target")
    into_command = pb.UpdateTaskRequest(
        task=pb.Task(id=log_task.id, target=command("-c", "print(2)")),
        update_mask=FieldMask(paths=["target"]),
    )
    refused(lambda: editor.tasks.UpdateTask(into_command), "task.target")
    changed = pb.Task()
    changed.CopyFrom(cmd_task)
    changed.target.command.args.append("--more")
    within = pb.UpdateTaskRequest(task=changed, update_mask=FieldMask(paths=["target"]))
    refused(lambda: editor.tasks.UpdateTask(within), "task.target")

    assert rds.dbsize() == size
    assert snapshot(rds) == before

    # What the editor may still do to an admin's command task: change what is not its target, or
    # send its target back as it is (a form that sends every field).
    renamed = editor.tasks.UpdateTask(
        pb.UpdateTaskRequest(
            task=pb.Task(id=cmd_task.id, name="renamed"), update_mask=FieldMask(paths=["name"])
        )
    ).task
    assert renamed.name == "renamed"
    same = pb.UpdateTaskRequest(task=renamed, update_mask=FieldMask(paths=["target", "name"]))
    assert editor.tasks.UpdateTask(same).task.target == cmd_task.target
    # Out of a command target is fine too.
    back_to_log = pb.UpdateTaskRequest(
        task=pb.Task(id=cmd_task.id, target=pb.Target(log=pb.LogTarget())),
        update_mask=FieldMask(paths=["target"]),
    )
    assert editor.tasks.UpdateTask(back_to_log).task.target.HasField("log")


def test_the_permission_is_checked_before_the_executor_capability(
    auth_api: AuthApi, rds: redis.Redis
) -> None:
    """No command executor: the editor without the permission learns it may not, not that it
    could if an executor were running."""
    admin = auth_api.admin
    editor = admin.as_token(admin.new_token("plain editor", EDITOR)[1])
    before = snapshot(rds)
    refused(lambda: editor.tasks.CreateTask(pb.CreateTaskRequest(task=command_task("new"))))
    assert snapshot(rds) == before


def test_admins_and_tokens_with_the_flag_may_and_the_flag_is_shown(
    auth_api: AuthApi, rds: redis.Redis
) -> None:
    vouch_for_a_command_executor(rds)
    admin = auth_api.admin
    token, secret = _flagged(admin, "runner", EDITOR)
    assert token.allow_command_targets
    runner = admin.as_token(secret)
    assert runner.auth.WhoAmI(pb.WhoAmIRequest()).token.allow_command_targets
    listed = {t.name: t for t in admin.auth.ListTokens(pb.ListTokensRequest()).tokens}
    assert listed["runner"].allow_command_targets and not listed["bootstrap"].allow_command_targets

    created = runner.tasks.CreateTask(pb.CreateTaskRequest(task=command_task("mine"))).task
    assert created.target.command.program == sys.executable
    batch = pb.BatchCreateTasksRequest(
        requests=[pb.CreateTaskRequest(task=command_task(f"b{i}")) for i in range(2)]
    )
    assert len(runner.tasks.BatchCreateTasks(batch).tasks) == 2
    changed = pb.Task()
    changed.CopyFrom(created)
    changed.target.command.args.append("--more")
    updated = runner.tasks.UpdateTask(
        pb.UpdateTaskRequest(task=changed, update_mask=FieldMask(paths=["target"]))
    )
    assert list(updated.task.target.command.args)[-1] == "--more"

    # An admin needs no flag; a namespaced editor with the flag may, in its namespace.
    assert admin.tasks.CreateTask(pb.CreateTaskRequest(task=command_task("admin's"))).task.id
    _, scoped = _flagged(admin, "scoped runner", EDITOR, namespace="team-a")
    in_ns = admin.as_token(scoped).tasks.CreateTask(pb.CreateTaskRequest(task=command_task("ns"))).task
    assert in_ns.namespace == "team-a"


def test_a_viewer_with_the_flag_still_cannot_write(auth_api: AuthApi, rds: redis.Redis) -> None:
    vouch_for_a_command_executor(rds)
    admin = auth_api.admin
    viewer = admin.as_token(_flagged(admin, "looker", VIEWER)[1])
    before = snapshot(rds)
    err = rpc_error(lambda: viewer.tasks.CreateTask(pb.CreateTaskRequest(task=command_task("x"))), DENIED)
    assert "editor" in (err.details() or "")
    assert snapshot(rds) == before


def test_without_authentication_every_caller_may(
    stub: pb.task_service_grpc.TaskServiceStub, rds: redis.Redis
) -> None:
    vouch_for_a_command_executor(rds)
    created = stub.CreateTask(pb.CreateTaskRequest(task=command_task("anonymous"))).task
    assert created.target.HasField("command")


def _flagged(admin: Caller, name: str, role: int, namespace: str = "") -> tuple[pb.Token, str]:
    reply = admin.auth.CreateToken(
        pb.CreateTokenRequest(
            token=pb.Token(name=name, role=role, namespace=namespace, allow_command_targets=True)  # type: ignore[arg-type]
        )
    )
    return reply.token, reply.secret


def test_an_admin_token_limited_to_a_namespace_may_grant_it_in_its_namespace(
    auth_api: AuthApi, rds: redis.Redis
) -> None:
    vouch_for_a_command_executor(rds)
    admin = auth_api.admin
    ns_admin = admin.as_token(admin.new_token("ns admin", ADMIN, namespace="team-b")[1])
    token, secret = _flagged(ns_admin, "ns runner", EDITOR, namespace="team-b")
    assert token.allow_command_targets
    assert admin.as_token(secret).tasks.CreateTask(pb.CreateTaskRequest(task=command_task("b"))).task.id
