"""The audit trail: every successful change through the api is recorded, in the same script as
the change, with its actor and request id; refused and no-op calls record nothing."""

from __future__ import annotations

import time

import grpc
import redis
from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import pb
from schedcore.store.keys import Keys
from tests.integration.auth_support import (
    ADMIN,
    EDITOR,
    VIEWER,
    AuthApi,
    Caller,
    start_auth_api,
)
from tests.integration.helpers import cron_task, invalid, rpc_error, stop_service, ts_ms
from tests.support import RedisServer

A = pb.AuditAction
AUDIT = Keys().audit


def events(caller: Caller, **filters: object) -> list[pb.AuditEvent]:
    out: list[pb.AuditEvent] = []
    token = ""
    while True:
        page = caller.audit.ListAuditEvents(pb.ListAuditEventsRequest(page_token=token, **filters))  # type: ignore[arg-type]
        out += page.events
        token = page.next_page_token
        if not token:
            return out


def test_every_change_is_recorded_with_its_actor_and_request_id(auth_api: AuthApi) -> None:
    admin = auth_api.admin
    token, secret = admin.new_token("ops", EDITOR, "team-a")
    ops = admin.as_token(secret)

    def rid(n: str) -> Caller:
        return ops.with_request_id(f"req-{n}")

    task = rid("create").tasks.CreateTask(pb.CreateTaskRequest(task=cron_task("t"))).task
    batch = (
        rid("batch")
        .tasks.BatchCreateTasks(
            pb.BatchCreateTasksRequest(
                requests=[
                    pb.CreateTaskRequest(task=cron_task("b1")),
                    pb.CreateTaskRequest(task=cron_task("b2")),
                ]
            )
        )
        .tasks
    )
    rid("update").tasks.UpdateTask(
        pb.UpdateTaskRequest(
            task=pb.Task(id=task.id, name="t2", description="d"),
            update_mask=FieldMask(paths=["name", "description"]),
        )
    )
    rid("pause").tasks.PauseTask(pb.PauseTaskRequest(id=task.id))
    rid("resume").tasks.ResumeTask(pb.ResumeTaskRequest(id=task.id))
    run = rid("run").tasks.RunTask(pb.RunTaskRequest(id=task.id)).execution
    rid("delete").tasks.DeleteTask(pb.DeleteTaskRequest(id=task.id))
    made, _ = admin.with_request_id("req-token").new_token("viewer", VIEWER, "team-a")
    admin.with_request_id("req-revoke").auth.RevokeToken(pb.RevokeTokenRequest(id=made.id))

    got = events(admin)
    boot = admin.auth.WhoAmI(pb.WhoAmIRequest()).token
    summary = [
        (
            e.action,
            e.actor,
            e.actor_token_id,
            e.request_id,
            e.namespace,
            e.task_id,
            e.execution_id,
            e.token_id,
        )
        for e in got
    ]
    assert summary == [
        (A.AUDIT_ACTION_REVOKE_TOKEN, "bootstrap", boot.id, "req-revoke", "team-a", "", "", made.id),
        (A.AUDIT_ACTION_CREATE_TOKEN, "bootstrap", boot.id, "req-token", "team-a", "", "", made.id),
        (A.AUDIT_ACTION_DELETE_TASK, "ops", token.id, "req-delete", "team-a", task.id, "", ""),
        (A.AUDIT_ACTION_RUN_TASK, "ops", token.id, "req-run", "team-a", task.id, run.id, ""),
        (A.AUDIT_ACTION_RESUME_TASK, "ops", token.id, "req-resume", "team-a", task.id, "", ""),
        (A.AUDIT_ACTION_PAUSE_TASK, "ops", token.id, "req-pause", "team-a", task.id, "", ""),
        (A.AUDIT_ACTION_UPDATE_TASK, "ops", token.id, "req-update", "team-a", task.id, "", ""),
        (A.AUDIT_ACTION_CREATE_TASK, "ops", token.id, "req-batch", "team-a", batch[1].id, "", ""),
        (A.AUDIT_ACTION_CREATE_TASK, "ops", token.id, "req-batch", "team-a", batch[0].id, "", ""),
        (A.AUDIT_ACTION_CREATE_TASK, "ops", token.id, "req-create", "team-a", task.id, "", ""),
        # A call without x-request-id gets one (the one its logs carry).
        (A.AUDIT_ACTION_CREATE_TOKEN, "bootstrap", boot.id, got[-1].request_id, "team-a", "", "", token.id),
    ]
    assert len(got[-1].request_id) == 16
    assert list(got[4 + 2].update_mask.paths) == ["name", "description"]
    times = [e.time.ToMilliseconds() for e in got]
    assert times == sorted(times, reverse=True) and abs(times[0] - time.time() * 1000) < 60_000
    ids = [e.id for e in got]
    assert len(set(ids)) == len(ids)


def test_refused_and_no_op_calls_record_nothing(auth_api: AuthApi, rds: redis.Redis) -> None:
    admin = auth_api.admin
    _, viewer = admin.new_token("viewer", VIEWER)
    _, other_ns = admin.new_token("other", EDITOR, "team-b")
    revoked, _ = admin.new_token("gone", VIEWER)
    admin.auth.RevokeToken(pb.RevokeTokenRequest(id=revoked.id))
    task = admin.tasks.CreateTask(pb.CreateTaskRequest(task=cron_task("t"), request_id="once")).task
    admin.tasks.PauseTask(pb.PauseTaskRequest(id=task.id))
    done = admin.tasks.CreateTask(pb.CreateTaskRequest(task=cron_task("c"))).task
    count = rds.xlen(AUDIT)

    denied = grpc.StatusCode.PERMISSION_DENIED
    rpc_error(lambda: admin.as_token(viewer).tasks.DeleteTask(pb.DeleteTaskRequest(id=task.id)), denied)
    rpc_error(lambda: admin.as_token(other_ns).tasks.RunTask(pb.RunTaskRequest(id=task.id)), denied)
    anonymous = Caller(auth_api.channel, None)
    rpc_error(
        lambda: anonymous.tasks.CreateTask(pb.CreateTaskRequest(task=cron_task("x"))),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    invalid(
        lambda: admin.tasks.CreateTask(pb.CreateTaskRequest(task=pb.Task(name="no schedule"))),
        "task.schedule",
    )
    rpc_error(
        lambda: admin.tasks.DeleteTask(pb.DeleteTaskRequest(id=task.id, etag="99")), grpc.StatusCode.ABORTED
    )
    rpc_error(lambda: admin.tasks.RunTask(pb.RunTaskRequest(id="0" * 16)), grpc.StatusCode.NOT_FOUND)
    # No-ops: a repeated request id, pausing a paused task, revoking a revoked token.
    assert (
        admin.tasks.CreateTask(pb.CreateTaskRequest(task=cron_task("t"), request_id="once")).task.id
        == task.id
    )
    admin.tasks.PauseTask(pb.PauseTaskRequest(id=task.id))
    admin.tasks.ResumeTask(pb.ResumeTaskRequest(id=done.id))  # active already
    admin.auth.RevokeToken(pb.RevokeTokenRequest(id=revoked.id))
    # Reads.
    admin.tasks.GetTask(pb.GetTaskRequest(id=task.id))
    admin.auth.ListTokens(pb.ListTokensRequest())
    assert rds.xlen(AUDIT) == count


def test_filters_paging_and_namespace_restriction(auth_api: AuthApi) -> None:
    admin = auth_api.admin
    a_token, a_secret = admin.new_token("a", EDITOR, "team-a")
    a = admin.as_token(a_secret)
    a_viewer = admin.as_token(admin.new_token("a viewer", VIEWER, "team-a")[1])
    mine = [a.tasks.CreateTask(pb.CreateTaskRequest(task=cron_task(f"a{i}"))).task for i in range(5)]
    time.sleep(0.02)  # the store's clock (event times) and ours are one machine's
    middle = int(time.time() * 1000)
    time.sleep(0.02)
    theirs = admin.tasks.CreateTask(pb.CreateTaskRequest(task=cron_task("d"))).task
    a.tasks.PauseTask(pb.PauseTaskRequest(id=mine[0].id))

    assert [e.task_id for e in events(admin, task_id=mine[0].id)] == [mine[0].id] * 2
    assert [e.action for e in events(admin, actor_token_id=a_token.id)] == [A.AUDIT_ACTION_PAUSE_TASK] + [
        A.AUDIT_ACTION_CREATE_TASK
    ] * 5
    assert {e.task_id for e in events(admin, namespace="default")} == {theirs.id}
    after = events(admin, start_time=ts_ms(middle))
    assert [e.task_id for e in after] == [mine[0].id, theirs.id]
    before = events(admin, end_time=ts_ms(middle), namespace="team-a", page_size=2)
    # The five creations, then the creation of the two team-a tokens.
    assert [e.task_id for e in before] == [t.id for t in reversed(mine)] + ["", ""]
    assert [e.action for e in before[-2:]] == [A.AUDIT_ACTION_CREATE_TOKEN] * 2
    # A namespaced viewer reads its namespace's events only, whatever it asks.
    seen = events(a_viewer)
    assert {e.namespace for e in seen} == {"team-a"} and theirs.id not in {e.task_id for e in seen}
    assert len(seen) == len(events(admin, namespace="team-a"))
    invalid(lambda: admin.audit.ListAuditEvents(pb.ListAuditEventsRequest(task_id="x")), "task_id")
    invalid(
        lambda: admin.audit.ListAuditEvents(
            pb.ListAuditEventsRequest(start_time=ts_ms(2), end_time=ts_ms(1))
        ),
        "end_time",
    )
    first = admin.audit.ListAuditEvents(pb.ListAuditEventsRequest(page_size=1))
    invalid(
        lambda: admin.audit.ListAuditEvents(
            pb.ListAuditEventsRequest(page_size=1, page_token=first.next_page_token, namespace="team-a")
        ),
        "page_token",
    )


def test_the_trail_is_bounded_by_audit_max_events(redis_srv: RedisServer, rds: redis.Redis) -> None:
    service = start_auth_api(redis_srv, audit_max_events=1000)
    try:
        with grpc.insecure_channel(service.target) as channel:
            from tests.integration.auth_support import BOOTSTRAP

            admin = Caller(channel, BOOTSTRAP)
            for _ in range(3):
                admin.tasks.BatchCreateTasks(
                    pb.BatchCreateTasksRequest(requests=[pb.CreateTaskRequest(task=cron_task("n"))] * 1000),
                    timeout=60,
                )
            # Trimmed approximately (whole stream nodes, 100 entries by default).
            assert 1000 <= rds.xlen(AUDIT) < 1200
            assert admin.auth.WhoAmI(pb.WhoAmIRequest()).token.role == ADMIN
    finally:
        stop_service(service)


def test_without_authentication_events_name_no_actor(api) -> None:  # tests/conftest.py: AUTH_MODE=none
    with grpc.insecure_channel(api.target) as channel:
        anyone = Caller(channel, None).with_request_id("req-open")
        task = anyone.tasks.CreateTask(pb.CreateTaskRequest(task=cron_task("open"))).task
        (event,) = anyone.audit.ListAuditEvents(pb.ListAuditEventsRequest()).events
    assert (event.action, event.actor, event.actor_token_id, event.request_id, event.task_id) == (
        A.AUDIT_ACTION_CREATE_TASK,
        "",
        "",
        "req-open",
        task.id,
    )
    assert event.namespace == "default"
