"""schedctl's token, whoami and audit commands as operators run them (a subprocess) against an
api with AUTH_MODE=token."""

from __future__ import annotations

import json

import grpc

from schedcore.store.keys import Keys
from tests.integration.auth_support import BOOTSTRAP, AuthApi
from tests.integration.test_cli import schedctl


def run(api: AuthApi, token: str | None, *args: str) -> tuple[int, str, str]:
    env = {"SCHEDCTL_TOKEN": token} if token is not None else {}
    proc = schedctl(api.service.target, *args, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def ok_json(api: AuthApi, token: str, *args: str) -> dict:
    code, out, err = run(api, token, *args, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def test_tokens_create_list_revoke_and_whoami(auth_api: AuthApi) -> None:
    code, out, err = run(auth_api, BOOTSTRAP, "tokens", "create", "--name", "ci", "--role", "editor",
                         "--namespace", "team-a", "--ttl", "30d")  # fmt: skip
    assert code == 0, err
    lines = dict(line.split(":", 1) for line in out.splitlines())
    secret = lines["secret"].strip()
    assert secret.startswith("tsk_") and lines["role"].strip() == "editor"
    assert "shown only now" in err
    made = ok_json(auth_api, BOOTSTRAP, "tokens", "create", "--name", "viewer", "--role", "viewer")
    assert made["secret"].startswith("tsk_") and made["token"]["role"] == "ROLE_VIEWER"

    me = ok_json(auth_api, secret, "whoami")
    assert (me["name"], me["role"], me["namespace"]) == ("ci", "ROLE_EDITOR", "team-a")
    code, out, _ = run(auth_api, secret, "whoami")
    assert "ci" in out and "team-a" in out and secret not in out

    listed = ok_json(auth_api, BOOTSTRAP, "tokens", "list")["tokens"]
    assert [t["name"] for t in listed] == ["viewer", "ci", "bootstrap"]
    code, out, _ = run(auth_api, BOOTSTRAP, "tokens", "list")
    assert out.splitlines()[0].split()[:4] == ["ID", "NAME", "ROLE", "NAMESPACE"]
    assert secret not in out and made["secret"] not in out

    ci_id = listed[1]["id"]
    code, out, err = run(auth_api, BOOTSTRAP, "tokens", "revoke", ci_id)
    assert code == 0 and out.strip() == f"revoked {ci_id} (ci)", err
    code, _, err = run(auth_api, secret, "whoami")
    assert code == 10 + grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert err.startswith("error: UNAUTHENTICATED: ")
    assert [t["name"] for t in ok_json(auth_api, BOOTSTRAP, "tokens", "list")["tokens"]] == [
        "viewer",
        "bootstrap",
    ]
    shown = ok_json(auth_api, BOOTSTRAP, "tokens", "list", "--show-revoked")["tokens"]
    assert "revokeTime" in next(t for t in shown if t["id"] == ci_id)

    # A viewer may not manage tokens.
    code, _, err = run(auth_api, made["secret"], "tokens", "list")
    assert code == 10 + grpc.StatusCode.PERMISSION_DENIED.value[0], err
    code, _, err = run(auth_api, None, "list")
    assert code == 10 + grpc.StatusCode.UNAUTHENTICATED.value[0], err


def test_audit_lists_what_was_done(auth_api: AuthApi) -> None:
    created = ok_json(
        auth_api, BOOTSTRAP, "create", "--name", "job", "--cron", "0 * * * *", "--namespace", "team-a"
    )
    assert created["namespace"] == "team-a"
    ok_json(auth_api, BOOTSTRAP, "pause", created["id"])
    events = ok_json(auth_api, BOOTSTRAP, "audit", "--task", created["id"])["events"]
    assert [e["action"] for e in events] == ["AUDIT_ACTION_PAUSE_TASK", "AUDIT_ACTION_CREATE_TASK"]
    assert {e["actor"] for e in events} == {"bootstrap"}
    code, out, err = run(auth_api, BOOTSTRAP, "audit", "--namespace", "team-a", "--since", "10m")
    assert code == 0, err
    rows = out.splitlines()
    assert rows[0].split()[:3] == ["TIME", "ACTION", "ACTOR"]
    assert [r.split()[1] for r in rows[1:]] == ["pause-task", "create-task"]
    assert all(f"job ({created['id']})" in r for r in rows[1:]), rows  # named, with the id
    assert ok_json(auth_api, BOOTSTRAP, "audit", "--namespace", "nothing-here")["events"] == []
    tasks = ok_json(auth_api, BOOTSTRAP, "list", "--namespace", "team-a")["tasks"]
    assert [t["id"] for t in tasks] == [created["id"]]
    assert ok_json(auth_api, BOOTSTRAP, "list", "--namespace", "team-b")["tasks"] == []
    run_id = ok_json(auth_api, BOOTSTRAP, "run", created["id"])["id"]
    listed = ok_json(auth_api, BOOTSTRAP, "executions", "list", "--namespace", "team-a")["executions"]
    assert [e["id"] for e in listed] == [run_id] and listed[0]["namespace"] == "team-a"


def test_whoami_without_authentication(api) -> None:  # tests/conftest.py's api: AUTH_MODE=none
    proc = schedctl(api.target, "whoami")
    assert proc.returncode == 0, proc.stderr
    assert "anonymous admin" in proc.stdout
    assert json.loads(schedctl(api.target, "whoami", "-o", "json").stdout)["name"] == "anonymous"


def test_tokens_create_allow_command_targets_is_shown_and_grants_the_permission(
    auth_api: AuthApi, rds
) -> None:
    rds.hset(Keys().capabilities, "command", int(rds.time()[0]) * 1000 + 60_000)  # a command executor
    runner = ok_json(auth_api, BOOTSTRAP, "tokens", "create", "--name", "runner", "--role", "editor",
                     "--allow-command-targets")  # fmt: skip
    assert runner["token"]["allowCommandTargets"] is True
    plain = ok_json(auth_api, BOOTSTRAP, "tokens", "create", "--name", "plain", "--role", "editor")
    assert "allowCommandTargets" not in plain["token"]
    code, out, err = run(auth_api, BOOTSTRAP, "tokens", "list")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][-1] == "COMMANDS"
    assert {row[1]: row[-1] for row in rows[1:]} == {"runner": "yes", "plain": "no", "bootstrap": "admin"}
    code, out, _ = run(auth_api, runner["secret"], "whoami")
    assert "command targets: yes" in " ".join(out.split())

    create = ("create", "--name", "c", "--cron", "@daily", "--command", "/bin/true")
    code, _, err = run(auth_api, plain["secret"], *create)
    assert code == 10 + grpc.StatusCode.PERMISSION_DENIED.value[0], err
    assert "allow_command_targets" in err
    code, _, err = run(auth_api, runner["secret"], *create)
    assert code == 0, err
