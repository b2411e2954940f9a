"""Authentication and roles against a real api with AUTH_MODE=token (docs/security.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from schedcore import pb
from services.api.access import RULES
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.faults.cluster import libfaketime
from tests.integration.auth_support import (
    ADMIN,
    BOOTSTRAP,
    EDITOR,
    VIEWER,
    AuthApi,
    Caller,
    bearer,
    empty_request,
    every_method,
    method_id,
    raw_call,
    start_auth_api,
)
from tests.integration.helpers import TIMEOUT, create, cron_task, rpc_error, snapshot, stop_service
from tests.integration.test_api_process import REFLECTION_V1, api_process, reflection_call
from tests.support import RedisServer, ServiceThread, wait_for

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
METHODS = every_method()
WRITES = [m for m in METHODS if RULES[f"/{m[0].full_name}/{m[1].name}"].role > VIEWER]
TOKEN_RPCS = [m for m in METHODS if RULES[f"/{m[0].full_name}/{m[1].name}"].role == ADMIN]
EMAIL_CHANNEL = pb.Channel(name="ops mail", email=pb.EmailChannel(to=["ops@example.com"]))


def test_the_role_table_names_every_rpc_of_the_public_services() -> None:
    assert set(RULES) == {f"/{s.full_name}/{m.name}" for s, m in METHODS}
    assert {method_id(m) for m in TOKEN_RPCS} == {
        "AuthService.CreateToken",
        "AuthService.ListTokens",
        "AuthService.RevokeToken",
    }
    assert "TaskService.CreateTask" in {method_id(m) for m in WRITES}
    assert "TaskService.PreviewSchedule" not in {method_id(m) for m in WRITES}


@pytest.fixture()
def bad_credentials(auth_api: AuthApi) -> dict[str, tuple[tuple[str, str], ...]]:
    """Metadata that must not get a call through: none, malformed, garbage, revoked, expired."""
    admin = auth_api.admin
    revoked_token, revoked = admin.new_token("revoked", ADMIN)
    admin.auth.RevokeToken(pb.RevokeTokenRequest(id=revoked_token.id))
    _, expired = admin.new_token("expired", ADMIN, ttl_s=1)
    wait_for(lambda: _refused(auth_api, expired), timeout=5)
    return {
        "none": (),
        "empty bearer": (("authorization", "Bearer "),),
        "basic scheme": (("authorization", f"Basic {BOOTSTRAP}"),),
        "garbage": bearer("tsk_" + "x" * 43),
        "bootstrap with a typo": bearer(BOOTSTRAP[:-1] + ("a" if BOOTSTRAP[-1] != "a" else "b")),
        "too long": bearer("y" * 5000),
        "revoked": bearer(revoked),
        "expired": bearer(expired),
    }


def _refused(api: AuthApi, secret: str) -> bool:
    try:
        api.caller(secret).auth.WhoAmI(pb.WhoAmIRequest())
    except grpc.RpcError as err:
        return bool(err.code() == UNAUTHENTICATED)
    return False


@pytest.mark.parametrize("item", METHODS, ids=method_id)
def test_every_rpc_refuses_a_call_without_a_valid_token(
    auth_api: AuthApi, bad_credentials: dict[str, tuple[tuple[str, str], ...]], rds: redis.Redis, item
) -> None:
    service, method = item
    create(auth_api.admin.tasks, cron_task("there"))  # type: ignore[arg-type]
    before = snapshot(rds)
    messages = set()
    for label, metadata in bad_credentials.items():
        err = rpc_error(
            lambda metadata=metadata: raw_call(
                auth_api.channel, service, method, empty_request(method), metadata
            ),
            UNAUTHENTICATED,
        )
        if label in ("garbage", "bootstrap with a typo", "revoked", "expired"):
            messages.add(err.details())
    # Unknown, revoked and expired tokens read alike: nothing tells whether a token exists.
    assert len(messages) == 1, messages
    assert BOOTSTRAP not in messages.pop()
    assert snapshot(rds) == before


@pytest.mark.parametrize("item", WRITES, ids=method_id)
def test_a_viewer_is_refused_every_write_and_nothing_changes(
    auth_api: AuthApi, rds: redis.Redis, item
) -> None:
    service, method = item
    admin = auth_api.admin
    task = create(admin.tasks, cron_task("target"))  # type: ignore[arg-type]
    run = admin.tasks.RunTask(pb.RunTaskRequest(id=task.id)).execution
    token, _ = admin.new_token("someone", VIEWER)
    _, viewer = admin.new_token("viewer", VIEWER)
    channel = admin.alerts.CreateChannel(pb.CreateChannelRequest(channel=EMAIL_CHANNEL)).channel
    # Requests that would succeed with the right role.
    requests = {
        "CreateTask": pb.CreateTaskRequest(task=cron_task("new")),
        "BatchCreateTasks": pb.BatchCreateTasksRequest(requests=[pb.CreateTaskRequest(task=cron_task("b"))]),
        "UpdateTask": pb.UpdateTaskRequest(task=pb.Task(id=task.id, name="renamed")),
        "DeleteTask": pb.DeleteTaskRequest(id=task.id),
        "PauseTask": pb.PauseTaskRequest(id=task.id),
        "ResumeTask": pb.ResumeTaskRequest(id=task.id),
        "RunTask": pb.RunTaskRequest(id=task.id),
        "RerunExecution": pb.RerunExecutionRequest(id=run.id),
        "CancelExecution": pb.CancelExecutionRequest(id=run.id),
        "BackfillTask": pb.BackfillTaskRequest(
            id=task.id, start_time={"seconds": 1_700_000_000}, end_time={"seconds": 1_700_000_060}
        ),
        "CreateToken": pb.CreateTokenRequest(token=pb.Token(name="x", role=ADMIN)),
        "ListTokens": pb.ListTokensRequest(),
        "RevokeToken": pb.RevokeTokenRequest(id=token.id),
        "CreateChannel": pb.CreateChannelRequest(channel=EMAIL_CHANNEL),
        "UpdateChannel": pb.UpdateChannelRequest(channel=pb.Channel(id=channel.id, name="renamed")),
        "DeleteChannel": pb.DeleteChannelRequest(id=channel.id),
        "TestChannel": pb.TestChannelRequest(id=channel.id),
    }
    before = snapshot(rds)
    err = rpc_error(
        lambda: raw_call(auth_api.channel, service, method, requests[method.name], bearer(viewer)), DENIED
    )
    assert "viewer" in (err.details() or "")
    assert snapshot(rds) == before


@pytest.mark.parametrize("item", TOKEN_RPCS, ids=method_id)
def test_an_editor_is_refused_the_token_rpcs(auth_api: AuthApi, rds: redis.Redis, item) -> None:
    service, method = item
    admin = auth_api.admin
    token, editor = admin.new_token("editor", EDITOR)
    requests = {
        "CreateToken": pb.CreateTokenRequest(token=pb.Token(name="x", role=VIEWER)),
        "ListTokens": pb.ListTokensRequest(),
        "RevokeToken": pb.RevokeTokenRequest(id=token.id),
    }
    before = snapshot(rds)
    rpc_error(
        lambda: raw_call(auth_api.channel, service, method, requests[method.name], bearer(editor)), DENIED
    )
    assert snapshot(rds) == before


def test_roles_include_the_ones_before_them(auth_api: AuthApi) -> None:
    admin = auth_api.admin
    _, viewer_secret = admin.new_token("viewer", VIEWER)
    _, editor_secret = admin.new_token("editor", EDITOR)
    viewer, editor = admin.as_token(viewer_secret), admin.as_token(editor_secret)
    task = create(editor.tasks, cron_task("by editor"))  # type: ignore[arg-type]
    assert viewer.tasks.GetTask(pb.GetTaskRequest(id=task.id)).task.name == "by editor"
    assert [t.id for t in viewer.tasks.ListTasks(pb.ListTasksRequest()).tasks] == [task.id]
    assert viewer.tasks.GetStats(pb.GetStatsRequest()).tasks
    preview = pb.PreviewScheduleRequest(schedule=pb.Schedule(cron=pb.CronSchedule(expression="0 * * * *")))
    assert len(viewer.tasks.PreviewSchedule(preview).fire_times) == 5
    assert viewer.tasks.ListExecutions(pb.ListExecutionsRequest()).executions == []
    assert viewer.audit.ListAuditEvents(pb.ListAuditEventsRequest()).events
    assert viewer.auth.WhoAmI(pb.WhoAmIRequest()).token.role == VIEWER
    channel = editor.alerts.CreateChannel(pb.CreateChannelRequest(channel=EMAIL_CHANNEL)).channel
    assert viewer.alerts.GetChannel(pb.GetChannelRequest(id=channel.id)).channel.name == "ops mail"
    assert [c.id for c in viewer.alerts.ListChannels(pb.ListChannelsRequest()).channels] == [channel.id]
    assert viewer.alerts.ListNotifications(pb.ListNotificationsRequest(task_id=task.id)).notifications == []
    run = editor.tasks.RunTask(pb.RunTaskRequest(id=task.id)).execution
    assert viewer.tasks.GetExecution(pb.GetExecutionRequest(id=run.id)).execution.id == run.id
    editor.tasks.DeleteTask(pb.DeleteTaskRequest(id=task.id))


def test_the_bootstrap_token_is_a_cluster_wide_admin(auth_api: AuthApi, redis_srv: RedisServer) -> None:
    me = auth_api.admin.auth.WhoAmI(pb.WhoAmIRequest()).token
    assert (me.name, me.role, me.namespace, me.created_by) == ("bootstrap", ADMIN, "", "bootstrap")
    # Another replica starting with the same secret finds it: still one bootstrap token.
    again = start_auth_api(redis_srv)
    try:
        wait_for(lambda: again.run(again.service._check()), timeout=5)
        listed = auth_api.admin.auth.ListTokens(pb.ListTokensRequest()).tokens
        assert [t.id for t in listed if t.name == "bootstrap"] == [me.id]
    finally:
        stop_service(again)


def test_a_revoked_bootstrap_token_stays_revoked_when_a_replica_starts(
    auth_api: AuthApi, redis_srv: RedisServer
) -> None:
    admin = auth_api.admin
    me = admin.auth.WhoAmI(pb.WhoAmIRequest()).token
    _, other = admin.new_token("ops", ADMIN)
    admin.auth.RevokeToken(pb.RevokeTokenRequest(id=me.id))
    again = start_auth_api(redis_srv)
    try:
        with grpc.insecure_channel(again.target) as channel:
            rpc_error(lambda: Caller(channel, BOOTSTRAP).auth.WhoAmI(pb.WhoAmIRequest()), UNAUTHENTICATED)
            assert Caller(channel, other).auth.WhoAmI(pb.WhoAmIRequest()).token.name == "ops"
    finally:
        stop_service(again)


def test_created_token_works_and_its_secret_is_shown_once(auth_api: AuthApi, rds: redis.Redis) -> None:
    admin = auth_api.admin
    token, secret = admin.new_token("ci pipeline", EDITOR, namespace="team-a", ttl_s=3600)
    assert secret.startswith("tsk_") and len(secret) == 4 + 43
    assert len(token.id) == 16 and token.created_by == "bootstrap"
    assert token.expire_time.ToMilliseconds() - token.create_time.ToMilliseconds() == 3600_000
    me = admin.as_token(secret).auth.WhoAmI(pb.WhoAmIRequest()).token
    assert (me.id, me.name, me.role, me.namespace) == (token.id, "ci pipeline", EDITOR, "team-a")
    listed = admin.auth.ListTokens(pb.ListTokensRequest()).tokens
    assert [t.name for t in listed] == ["ci pipeline", "bootstrap"]  # newest first
    # Only the SHA-256 is stored: the secret appears nowhere in Redis.
    for key in rds.keys("*"):
        kind = rds.type(key)
        values = rds.hvals(key) if kind == b"hash" else [rds.get(key)] if kind == b"string" else []
        assert all(secret.encode() not in (v or b"") for v in values)
        assert secret.encode() not in key
        assert BOOTSTRAP.encode() not in key and all(BOOTSTRAP.encode() not in (v or b"") for v in values)


def test_create_token_validation(auth_api: AuthApi) -> None:
    from tests.integration.helpers import invalid

    admin = auth_api.admin

    def make(token: pb.Token, ttl_s: float | None = None) -> object:
        request = pb.CreateTokenRequest(token=token)
        if ttl_s is not None:
            request.ttl.FromMilliseconds(int(ttl_s * 1000))
        return lambda: admin.auth.CreateToken(request)

    invalid(make(pb.Token(role=VIEWER)), "token.name")
    invalid(make(pb.Token(name="x" * 201, role=VIEWER)), "token.name")
    invalid(make(pb.Token(name="x")), "token.role")
    invalid(make(pb.Token(name="x", role=99)), "token.role")  # type: ignore[arg-type]
    invalid(make(pb.Token(name="x", role=VIEWER, namespace="Team_A")), "token.namespace")
    invalid(make(pb.Token(name="x", role=VIEWER, namespace="-a")), "token.namespace")
    invalid(make(pb.Token(name="x", role=VIEWER), ttl_s=11 * 365 * 86400), "ttl")
    invalid(make(pb.Token(name="x", role=VIEWER), ttl_s=-5), "ttl")
    assert admin.new_token("x" * 200, VIEWER, namespace="a" * 63, ttl_s=10 * 365 * 86400)[0].id
    invalid(lambda: admin.auth.RevokeToken(pb.RevokeTokenRequest(id="nope")), "id")
    rpc_error(lambda: admin.auth.RevokeToken(pb.RevokeTokenRequest(id="0" * 16)), grpc.StatusCode.NOT_FOUND)


def test_list_tokens_hides_revoked_and_expired_unless_asked_and_pages(auth_api: AuthApi) -> None:
    admin = auth_api.admin
    made = [admin.new_token(f"t{i}", VIEWER)[0] for i in range(5)]
    admin.new_token("short", VIEWER, ttl_s=1)
    admin.auth.RevokeToken(pb.RevokeTokenRequest(id=made[0].id))
    time.sleep(1.1)
    # Newest first: by creation time, then id (tokens made within one millisecond tie on time).
    full = admin.auth.ListTokens(pb.ListTokensRequest(show_revoked=True)).tokens
    order = [t.name for t in sorted(full, key=lambda t: (t.create_time.ToMilliseconds(), t.id), reverse=True)]
    assert sorted(order) == sorted(["short", "t4", "t3", "t2", "t1", "t0", "bootstrap"])
    assert order[-1] == "bootstrap"
    names = [t.name for t in admin.auth.ListTokens(pb.ListTokensRequest()).tokens]
    assert names == [n for n in order if n not in ("short", "t0")]
    every: list[str] = []
    token = ""
    while True:
        page = admin.auth.ListTokens(pb.ListTokensRequest(show_revoked=True, page_size=2, page_token=token))
        every += [t.name for t in page.tokens]
        token = page.next_page_token
        if not token:
            break
    assert every == order
    revoked = [
        t for t in admin.auth.ListTokens(pb.ListTokensRequest(show_revoked=True)).tokens if t.name == "t0"
    ]
    assert revoked[0].HasField("revoke_time")


def test_revoking_is_immediate_on_the_replica_and_within_the_cache_time_on_another(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    cache_s = 1.0
    one = start_auth_api(redis_srv, auth_cache_s=cache_s)
    two = start_auth_api(redis_srv, auth_cache_s=cache_s)
    try:
        with grpc.insecure_channel(one.target) as c1, grpc.insecure_channel(two.target) as c2:
            admin = Caller(c1, BOOTSTRAP)
            token, secret = admin.new_token("soon revoked", EDITOR)
            on_one, on_two = Caller(c1, secret), Caller(c2, secret)
            assert on_one.auth.WhoAmI(pb.WhoAmIRequest()).token.id == token.id  # cached on both
            assert on_two.auth.WhoAmI(pb.WhoAmIRequest()).token.id == token.id
            admin.auth.RevokeToken(pb.RevokeTokenRequest(id=token.id))
            revoked_at = time.monotonic()
            rpc_error(lambda: on_one.tasks.ListTasks(pb.ListTasksRequest()), UNAUTHENTICATED)

            def refused_on_two() -> bool:
                try:
                    on_two.tasks.ListTasks(pb.ListTasksRequest())
                except grpc.RpcError as err:
                    assert err.code() == UNAUTHENTICATED
                    return True
                return False

            wait_for(refused_on_two, timeout=5, interval=0.02)
            assert time.monotonic() - revoked_at <= cache_s + 0.5
    finally:
        stop_service(one)
        stop_service(two)


def test_health_and_reflection_answer_without_a_token(auth_api: AuthApi) -> None:
    health = health_pb2_grpc.HealthStub(auth_api.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="scheduler.v1.AuthService"), timeout=TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(auth_api.channel)
    replies = list(
        stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    )
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"scheduler.v1.TaskService", "scheduler.v1.AuthService", "scheduler.v1.AuditService"} <= names
    # Reflection v1 too (the same messages on the wire, under grpc.reflection.v1).
    (listed,) = reflection_call(
        auth_api.channel, REFLECTION_V1, [reflection_pb2.ServerReflectionRequest(list_services="")]
    )
    assert names == {s.name for s in listed.list_services_response.service}


@pytest.fixture()
def open_api(redis_srv: RedisServer, rds: redis.Redis) -> Iterator[ServiceThread]:
    service = ServiceThread(build_api, api_settings(redis_srv.url, auth_mode="none"))
    yield service
    stop_service(service)


def test_without_authentication_whoami_is_an_anonymous_admin(open_api: ServiceThread) -> None:
    with grpc.insecure_channel(open_api.target) as channel:
        me = Caller(channel, None).auth.WhoAmI(pb.WhoAmIRequest()).token
        assert (me.id, me.name, me.role, me.namespace) == ("", "anonymous", ADMIN, "")
        # Any token, even garbage, is ignored: every caller is that admin.
        assert Caller(channel, "garbage").auth.WhoAmI(pb.WhoAmIRequest()).token.name == "anonymous"


def test_token_secrets_never_reach_the_logs_of_an_api_process(tmp_path, redis_srv: RedisServer, rds) -> None:
    from tests.integration.test_api_process import api_process

    with (
        api_process(
            tmp_path, redis_srv.url, AUTH_MODE="token", AUTH_BOOTSTRAP_TOKEN=BOOTSTRAP, LOG_LEVEL="DEBUG"
        ) as proc,
        proc.channel() as channel,
    ):
        admin = Caller(channel, BOOTSTRAP)
        token, secret = admin.new_token("logged", EDITOR)
        user = Caller(channel, secret)
        create(user.tasks, cron_task("x"))  # type: ignore[arg-type]
        rpc_error(lambda: user.auth.ListTokens(pb.ListTokensRequest()), DENIED)
        admin.auth.RevokeToken(pb.RevokeTokenRequest(id=token.id))
        rpc_error(lambda: user.tasks.ListTasks(pb.ListTasksRequest()), UNAUTHENTICATED)
        rpc_error(
            lambda: Caller(channel, secret + "x").tasks.ListTasks(pb.ListTasksRequest()), UNAUTHENTICATED
        )
        proc.proc.terminate()
        proc.proc.wait(15)
        logs = proc.stdout() + proc.stderr()
    assert "UNAUTHENTICATED" in logs and "PERMISSION_DENIED" in logs  # the refusals were logged
    for secret_text in (BOOTSTRAP, secret, secret[4:], BOOTSTRAP[5:]):
        assert secret_text not in logs


def test_an_api_process_without_authentication_warns_at_start(tmp_path, redis_srv: RedisServer) -> None:
    from tests.integration.test_api_process import api_process

    with api_process(tmp_path, redis_srv.url, AUTH_MODE="none") as proc:
        (line,) = [x for x in proc.log_lines() if str(x["msg"]).startswith("AUTH_MODE=none")]
        assert line["level"] == "WARNING"
    with api_process(tmp_path, redis_srv.url, AUTH_MODE="token") as proc:
        assert proc.log_lines() and not [x for x in proc.log_lines() if "AUTH_MODE" in str(x["msg"])]


@pytest.mark.parametrize("skew_s", [7200, -7200])
def test_token_expiry_follows_the_store_clock_not_the_replicas(
    skew_s: int, redis_srv: RedisServer, rds: redis.Redis, tmp_path: Path
) -> None:
    """docs/guarantees.md, promise 4 (one clock): an api replica whose wall clock is two hours
    off neither refuses a token that has an hour left nor accepts one that expired."""
    skewed = {"LD_PRELOAD": libfaketime(), "FAKETIME": f"{skew_s:+d}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    env = {"AUTH_MODE": "token", "AUTH_BOOTSTRAP_TOKEN": BOOTSTRAP, "AUTH_CACHE_SECONDS": "0.2", **skewed}
    with api_process(tmp_path, redis_srv.url, **env) as api, api.channel() as channel:
        admin = Caller(channel, BOOTSTRAP)
        wait_for(lambda: _accepted(admin), timeout=10)
        hour, hour_secret = admin.new_token("an hour left", VIEWER, ttl_s=3600)
        second, second_secret = admin.new_token("a second left", VIEWER, ttl_s=1)
        store_ms = int(rds.time()[0]) * 1000
        assert abs(hour.expire_time.ToMilliseconds() - (store_ms + 3_600_000)) < 60_000, (
            "set by the store's clock"
        )
        assert admin.as_token(hour_secret).auth.WhoAmI(pb.WhoAmIRequest()).token.id == hour.id
        listed = {t.id for t in admin.auth.ListTokens(pb.ListTokensRequest()).tokens}
        assert hour.id in listed
        time.sleep(1.5)
        refused = admin.as_token(second_secret).auth.WhoAmI
        rpc_error(lambda: refused(pb.WhoAmIRequest()), grpc.StatusCode.UNAUTHENTICATED)
        listed = {t.id for t in admin.auth.ListTokens(pb.ListTokensRequest()).tokens}
        assert hour.id in listed and second.id not in listed
        assert admin.as_token(hour_secret).auth.WhoAmI(pb.WhoAmIRequest()).token.id == hour.id


def _accepted(caller: Caller) -> bool:
    try:
        caller.auth.WhoAmI(pb.WhoAmIRequest())
        return True
    except grpc.RpcError:
        return False
