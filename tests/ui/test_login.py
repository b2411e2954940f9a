"""Signing in to the dashboard against a real api that requires tokens (AUTH_MODE=token)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from schedcore import pb
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.helpers import cron_task
from tests.support import RedisServer, ServiceThread
from tests.ui import dash
from tests.ui.dash import BOOTSTRAP, open_page, rerun_ok, texts

TASKS, EDIT = "views/tasks.py", "views/edit.py"

secured = dash.secured  # a fixture, shared with the other dashboard tests


def _meta(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def make_token(api: ServiceThread, role: int, name: str) -> tuple[str, str]:
    """(secret, id) of a new token, created with the bootstrap admin token."""
    with grpc.insecure_channel(api.target) as channel:
        auth = pb.auth_service_grpc.AuthServiceStub(channel)
        reply = auth.CreateToken(
            pb.CreateTokenRequest(token=pb.Token(name=name, role=role)),  # type: ignore[arg-type]
            metadata=_meta(BOOTSTRAP),
            timeout=10,
        )
    return reply.secret, reply.token.id


def sign_in(at, token: str):  # type: ignore[no-untyped-def]
    at.text_input(key="login_token").input(token)
    at.button[0].click()  # the form's submit button
    return rerun_ok(at)


def test_without_a_token_only_the_sign_in_form_shows(secured: ServiceThread, monkeypatch) -> None:
    at = open_page(monkeypatch, secured.target)
    assert [t.value for t in at.title] == ["Sign in"]
    assert "Overview" not in texts(at)
    # A token that is not valid is refused, and the form stays.
    at = sign_in(at, "tsk_not-a-token-at-all")
    assert "not accepted" in texts(at)
    assert [t.value for t in at.title] == ["Sign in"]


def test_a_valid_token_opens_the_dashboard_and_never_reaches_the_url(
    secured: ServiceThread, monkeypatch
) -> None:
    with grpc.insecure_channel(secured.target) as channel:
        stub = pb.task_service_grpc.TaskServiceStub(channel)
        stub.CreateTask(
            pb.CreateTaskRequest(task=cron_task("nightly")), metadata=_meta(BOOTSTRAP), timeout=10
        )
    secret, _ = make_token(secured, pb.Role.ROLE_EDITOR, "alice")
    at = open_page(monkeypatch, secured.target)
    at = sign_in(at, secret)
    assert "Overview" in [t.value for t in at.title]
    assert "Signed in as **alice** · editor · all namespaces" in texts(at)
    assert all(secret not in str(v) for v in at.query_params.values())
    # The form's field is gone with the form: the secret is kept only where the client reads it.
    assert "login_token" not in at.session_state
    at.switch_page(TASKS).run()
    assert "nightly" in set(at.dataframe[0].value["Name"])
    # Signing out forgets the token.
    at.button(key="sign_out").click()
    rerun_ok(at)
    assert [t.value for t in at.title] == ["Sign in"]


def test_a_viewer_reads_but_cannot_change(secured: ServiceThread, monkeypatch) -> None:
    with grpc.insecure_channel(secured.target) as channel:
        stub = pb.task_service_grpc.TaskServiceStub(channel)
        stub.CreateTask(pb.CreateTaskRequest(task=cron_task("report")), metadata=_meta(BOOTSTRAP), timeout=10)
    secret, _ = make_token(secured, pb.Role.ROLE_VIEWER, "vera")
    at = sign_in(open_page(monkeypatch, secured.target), secret)
    at.switch_page(TASKS).run()
    assert "report" in set(at.dataframe[0].value["Name"])  # the first task is picked
    for key in ("t_edit", "t_run", "t_delete"):
        assert at.button(key=key).disabled, key
    at.switch_page(EDIT).run()
    assert "viewer role" in texts(at)
    assert not [b for b in at.button if b.key == "e_save"]


def test_a_revoked_token_sends_the_session_back_to_sign_in(secured: ServiceThread, monkeypatch) -> None:
    secret, token_id = make_token(secured, pb.Role.ROLE_EDITOR, "bob")
    at = sign_in(open_page(monkeypatch, secured.target), secret)
    assert "Overview" in [t.value for t in at.title]
    with grpc.insecure_channel(secured.target) as channel:
        auth = pb.auth_service_grpc.AuthServiceStub(channel)
        auth.RevokeToken(pb.RevokeTokenRequest(id=token_id), metadata=_meta(BOOTSTRAP), timeout=10)
    at.switch_page(TASKS).run()  # the page's call is refused: back to the form, saying why
    assert not at.exception
    assert [t.value for t in at.title] == ["Sign in"]
    assert "no longer accepted" in texts(at)


def test_without_authentication_no_sign_in_is_asked(api_no_auth: ServiceThread, monkeypatch) -> None:
    at = open_page(monkeypatch, api_no_auth.target)
    assert "Overview" in [t.value for t in at.title]
    assert "Authentication is off" in texts(at)


@pytest.fixture()
def api_no_auth(redis_srv: RedisServer, rds) -> Iterator[ServiceThread]:
    service = ServiceThread(build_api, api_settings(redis_srv.url, auth_mode="none"))
    yield service
    service.stop()


def test_an_admin_creates_and_revokes_a_token_on_the_access_page(secured: ServiceThread, monkeypatch) -> None:
    at = sign_in(open_page(monkeypatch, secured.target), BOOTSTRAP)
    at.switch_page("views/access.py").run()
    at.text_input(key="a_name").input("ci robot")
    at.selectbox(key="a_role").select("viewer")
    [create] = [b for b in at.button if b.label == "Create token"]
    create.click()
    rerun_ok(at)
    [secret] = [c.value for c in at.code]
    assert "shown only this once" in texts(at)
    # The secret works, with the role chosen.
    with grpc.insecure_channel(secured.target) as channel:
        auth = pb.auth_service_grpc.AuthServiceStub(channel)
        me = auth.WhoAmI(pb.WhoAmIRequest(), metadata=_meta(secret), timeout=10).token
    assert (me.name, me.role) == ("ci robot", pb.Role.ROLE_VIEWER)
    rerun_ok(at)
    assert not at.code, "the secret is not shown again"
    frame = at.dataframe[0].value
    assert "ci robot" in set(frame["Name"])
    # Nothing is picked to begin with; each token is named, the one in use said so.
    picker = at.selectbox(key="a_pick")
    assert picker.value is None and at.button(key="a_revoke").disabled
    assert any("the token you are signed in with" in option for option in picker.options)
    assert any(o.startswith("ci robot · viewer · all namespaces") for o in picker.options)
    picker.select(me.id)
    rerun_ok(at)
    at.button(key="a_revoke").click()
    rerun_ok(at)
    assert "Revoke **ci robot" in texts(at)  # asked first: not revoked yet
    with grpc.insecure_channel(secured.target) as channel:
        auth = pb.auth_service_grpc.AuthServiceStub(channel)
        assert auth.WhoAmI(pb.WhoAmIRequest(), metadata=_meta(secret), timeout=10).token.id == me.id
    at.button(key="a_revoke_yes").click()
    rerun_ok(at)
    assert "Revoked ci robot." in texts(at)
    with grpc.insecure_channel(secured.target) as channel, pytest.raises(grpc.RpcError) as err:
        pb.auth_service_grpc.AuthServiceStub(channel).WhoAmI(
            pb.WhoAmIRequest(), metadata=_meta(secret), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_access_page_creates_a_token_that_may_create_command_targets(
    secured: ServiceThread, monkeypatch
) -> None:
    at = sign_in(open_page(monkeypatch, secured.target), BOOTSTRAP)
    at.switch_page("views/access.py").run()
    at.text_input(key="a_name").input("runner")
    at.checkbox(key="a_commands").check()
    [create] = [b for b in at.button if b.label == "Create token"]
    create.click()
    rerun_ok(at)
    [secret] = [c.value for c in at.code]
    with grpc.insecure_channel(secured.target) as channel:
        auth = pb.auth_service_grpc.AuthServiceStub(channel)
        me = auth.WhoAmI(pb.WhoAmIRequest(), metadata=_meta(secret), timeout=10).token
    assert (me.name, me.role, me.allow_command_targets) == ("runner", pb.Role.ROLE_EDITOR, True)
    make_token(secured, pb.Role.ROLE_EDITOR, "plain")
    rerun_ok(at)
    frame = at.dataframe[0].value
    shown = dict(zip(frame["Name"], frame["Command targets"], strict=True))
    assert shown == {"runner": "yes", "plain": "no", "bootstrap": "yes"}


def test_the_audit_trail_shows_who_did_what(secured: ServiceThread, monkeypatch) -> None:
    secret, _ = make_token(secured, pb.Role.ROLE_EDITOR, "alice")
    with grpc.insecure_channel(secured.target) as channel:
        stub = pb.task_service_grpc.TaskServiceStub(channel)
        task = stub.CreateTask(
            pb.CreateTaskRequest(task=cron_task("audited")), metadata=_meta(secret), timeout=10
        ).task
        stub.PauseTask(pb.PauseTaskRequest(id=task.id), metadata=_meta(secret), timeout=10)
    at = sign_in(open_page(monkeypatch, secured.target), secret)
    at.switch_page("views/audit.py").run()
    frame = at.dataframe[0].value
    mine = frame[frame["Task"] == f"audited ({task.id})"]  # named, not a bare id
    assert list(mine["Action"]) == ["paused task", "created task"]
    assert set(mine["Who"]) == {"alice"}
    # The filter takes (part of) a name, as on Executions; no match is said in words.
    at.text_input(key="au_task").input("udit")
    rerun_ok(at)
    assert at.selectbox(key="au_match").value == task.id
    assert set(at.dataframe[0].value["Task"]) == {f"audited ({task.id})"}
    at.text_input(key="au_task").input("no-such-task")
    rerun_ok(at)
    assert "No task's name contains 'no-such-task'" in texts(at)
    assert "INVALID_ARGUMENT" not in texts(at)
    # An editor is not offered the Access page.
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("views/access.py")
