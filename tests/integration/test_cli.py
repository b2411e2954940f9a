"""schedctl run as operators run it: a subprocess (`python -m cli`) against a live api on a real
Redis; `run` and `executions` against a real scheduler and executor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from schedcore import pb
from schedcore.store.keys import Keys
from tests.integration.engine_support import ROOT, Suite, suite
from tests.support import RedisServer, ServiceThread, free_port, wait_for

S = pb.ExecutionStatus
MISSING = "0123456789abcdef"


def schedctl(api: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("API_ADDR", "SCHEDCTL_TOKEN")}
    # The suite's api is plaintext (tests/conftest.py); test_tls.py runs schedctl over TLS.
    environ.update({"API_ADDR": api, "SCHEDCTL_PLAINTEXT": "true", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(api: str, *args: str) -> str:
    proc = schedctl(api, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def ok_json(api: str, *args: str) -> dict:
    return json.loads(ok(api, *args, "-o", "json"))


@pytest.fixture()
def addr(api: ServiceThread) -> str:
    return api.target


def test_create_with_flags_then_get(addr: str, stub) -> None:
    out = ok(
        addr,
        "create",
        "--name", "hook",
        "--cron", "*/5 * * * *",
        "--tz", "Europe/Berlin",
        "--http-url", "https://example.com/hook",
        "--method", "put",
        "--header", "X-Team: ops",
        "--body", '{"k": 1}',
        "--expected-status", "202",
        "--timeout", "1m30s",
        "--max-attempts", "3",
        "--initial-backoff", "500ms",
        "--label", "team=ops",
        "--label", "tier=1",
        "--payload", '{"who": "cli"}',
    )  # fmt: skip
    assert "name:" in out and "hook" in out
    assert "cron '*/5 * * * *' Europe/Berlin" in out
    task_id = next(line.split()[1] for line in out.splitlines() if line.startswith("id:"))
    task = stub.GetTask(pb.GetTaskRequest(id=task_id)).task  # what the api stored
    assert task.schedule.cron.expression == "*/5 * * * *"
    assert task.schedule.cron.time_zone == "Europe/Berlin"
    http = task.target.http
    assert (http.url, http.method, http.expected_status) == (
        "https://example.com/hook",
        pb.HttpMethod.HTTP_METHOD_PUT,
        202,
    )
    assert dict(http.headers) == {"X-Team": "ops"}
    assert http.body == b'{"k": 1}'
    assert task.timeout.ToMilliseconds() == 90_000
    assert task.retry_policy.max_attempts == 3
    assert task.retry_policy.initial_backoff.ToMilliseconds() == 500
    assert dict(task.labels) == {"team": "ops", "tier": "1"}
    assert dict(task.payload) == {"who": "cli"}

    got = ok_json(addr, "get", task_id)
    assert got["id"] == task_id
    assert got["target"]["http"]["headers"] == {"X-Team": "ops"}
    assert got["state"] == "TASK_STATE_ACTIVE"
    # -o before the subcommand works too.
    assert json.loads(ok(addr, "-o", "json", "get", task_id))["etag"] == got["etag"]


def test_create_from_file_with_a_flag_overriding_it(addr: str, tmp_path: Path) -> None:
    spec = {
        "name": "from-file",
        "schedule": {"cron": {"expression": "0 9 * * 1-5", "timeZone": "America/New_York"}},
        "target": {"log": {}},
        "payload": {"n": 3},
        "labels": {"src": "file"},
    }
    path = tmp_path / "task.json"
    path.write_text(json.dumps(spec))
    created = ok_json(addr, "create", "--from-file", str(path), "--name", "renamed")
    assert created["name"] == "renamed"
    assert created["schedule"]["cron"] == {"expression": "0 9 * * 1-5", "timeZone": "America/New_York"}
    assert created["labels"] == {"src": "file"}
    assert created["payload"] == {"n": 3.0}
    bad = tmp_path / "bad.json"
    bad.write_text('{"nmae": "x"}')
    proc = schedctl(addr, "create", "--from-file", str(bad))
    assert proc.returncode == 2
    assert "--from-file: not a valid Task" in proc.stderr


def test_list_filters_limit_and_all(addr: str) -> None:
    ids = {}
    for name, labels in (("alpha", ["env=prod"]), ("beta", ["env=dev"]), ("gamma", ["env=prod"])):
        args = ["create", "--name", name, "--cron", "@daily"]
        for label in labels:
            args += ["--label", label]
        ids[name] = ok_json(addr, *args)["id"]
    ok(addr, "pause", ids["beta"])

    def names(*args: str) -> list[str]:
        return [t["name"] for t in ok_json(addr, "list", *args)["tasks"]]

    assert names() == ["alpha", "beta", "gamma"]
    assert names("--state", "paused") == ["beta"]
    assert names("--label", "env=prod") == ["alpha", "gamma"]
    assert names("--name-contains", "MM") == ["gamma"]
    first = ok_json(addr, "list", "--limit", "2")
    assert [t["name"] for t in first["tasks"]] == ["alpha", "beta"]
    assert first["nextPageToken"]
    rest = ok_json(addr, "list", "--limit", "2", "--page-token", first["nextPageToken"])
    assert [t["name"] for t in rest["tasks"]] == ["gamma"]
    assert "nextPageToken" not in rest
    assert names("--all") == ["alpha", "beta", "gamma"]

    table = ok(addr, "list", "--limit", "2").splitlines()
    assert table[0].split() == ["ID", "NAME", "STATE", "SCHEDULE", "TARGET", "NEXT", "RUN", "LAST"]
    assert table[1].split()[:3] == [ids["alpha"], "alpha", "active"]
    assert table[2].split()[:3] == [ids["beta"], "beta", "paused"]
    assert table[3].startswith("(more: --all, or --page-token ")
    # Columns are aligned: every row's STATE starts where the header's does.
    column = table[0].index("STATE")
    assert table[1][column:].startswith("active") and table[2][column:].startswith("paused")


def test_update_changes_only_what_the_flags_name(addr: str, stub) -> None:
    task = ok_json(
        addr, "create", "--name", "u", "--cron", "@hourly", "--http-url", "http://a.example/x",
        "--header", "A: 1", "--label", "keep=yes", "--label", "drop=yes",
    )  # fmt: skip
    updated = ok_json(
        addr, "update", task["id"], "--tz", "Asia/Tokyo", "--header", "B: 2", "--remove-label", "drop",
        "--max-attempts", "2",
    )  # fmt: skip
    assert updated["schedule"]["cron"] == {"expression": "@hourly", "timeZone": "Asia/Tokyo"}
    assert updated["target"]["http"]["url"] == "http://a.example/x"
    assert updated["target"]["http"]["headers"] == {"A": "1", "B": "2"}
    assert updated["labels"] == {"keep": "yes"}
    assert updated["retryPolicy"]["maxAttempts"] == 2
    assert updated["name"] == "u"
    assert updated["etag"] != task["etag"]

    stale = schedctl(addr, "update", task["id"], "--etag", task["etag"], "--name", "late")
    assert stale.returncode == 10 + grpc.StatusCode.ABORTED.value[0] == 20
    assert stale.stderr.startswith("error: ABORTED: ")
    assert stub.GetTask(pb.GetTaskRequest(id=task["id"])).task.name == "u"
    nothing = schedctl(addr, "update", task["id"])
    assert nothing.returncode == 2
    assert "nothing to update" in nothing.stderr
    switched = ok_json(addr, "update", task["id"], "--at", "+1h", "--log")
    assert "once" in switched["schedule"] and "log" in switched["target"]


def test_every_creates_an_interval_and_an_update_of_it_keeps_the_phase(addr: str) -> None:
    out = ok(addr, "create", "--name", "iv", "--every", "1m30s", "--start-time", "2031-01-01T00:00:07Z")
    assert "every 1m30s from 2031-01-01T00:00:07Z" in out
    task = ok_json(addr, "get", out.split("id:", 1)[1].split()[0])
    assert task["schedule"]["interval"] == {"every": "90s", "startTime": "2031-01-01T00:00:07Z"}
    updated = ok_json(addr, "update", task["id"], "--every", "30s", "--end-time", "2031-02-01T00:00:00Z")
    assert updated["schedule"]["interval"] == {
        "every": "30s",
        "startTime": "2031-01-01T00:00:07Z",
        "endTime": "2031-02-01T00:00:00Z",
    }
    jittered = ok(addr, "update", task["id"], "--max-jitter", "2s")
    assert "max jitter:" in jittered and "2.0s" in jittered
    assert "maxJitter" not in ok_json(addr, "update", task["id"], "--max-jitter", "0s")
    caught = ok(
        addr, "update", task["id"], "--catch-up", "all", "--catch-up-limit", "3", "--catch-up-window", "1h"
    )
    assert "catch-up:" in caught and "all (up to 3), within 1h00m" in caught
    latest = ok_json(addr, "update", task["id"], "--catch-up", "latest")
    assert latest["catchUp"] == {"policy": "CATCH_UP_POLICY_RUN_LATEST", "window": "3600s"}
    wrong = schedctl(addr, "update", task["id"], "--tz", "Asia/Tokyo")
    assert wrong.returncode == 2 and "an interval is real time" in wrong.stderr
    refused = schedctl(addr, "create", "--name", "fast", "--every", "500ms")
    assert refused.returncode == 13 and "task.schedule.interval.every" in refused.stderr


def test_backfill_counts_then_creates_once(addr: str) -> None:
    task = ok_json(addr, "create", "--name", "bf", "--every", "1m", "--start-time", "2026-01-01T00:00:00Z")
    dry = ok(
        addr,
        "backfill",
        task["id"],
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-01T00:10:00Z",
        "--dry-run",
    )
    assert dry.strip() == "10 occurrences, 0 with a record already, would create 10"
    done = ok_json(
        addr, "backfill", task["id"], "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T00:10:00Z"
    )
    assert done == {"occurrences": 10, "created": 10}
    again = ok(addr, "backfill", task["id"], "--from", "2026-01-01T00:05:00Z", "--to", "2026-01-01T00:15:00Z")
    assert again.strip() == "10 occurrences, 5 with a record already, created 5"


def test_executions_rerun_prints_the_new_execution(addr: str) -> None:
    task_id = ok_json(addr, "create", "--name", "again", "--cron", "@daily", "--payload", '{"x": 1}')["id"]
    original = ok_json(addr, "run", task_id)
    made = ok_json(addr, "executions", "rerun", original["id"])
    assert made["trigger"] == "EXECUTION_TRIGGER_RERUN" and made["status"] == "EXECUTION_STATUS_PENDING"
    assert made["rerunOf"] == original["id"] and made["id"] != original["id"]
    assert made["nominalTime"] == original["nominalTime"] and made["payload"] == {"x": 1}
    shown = ok(addr, "executions", "rerun", original["id"])
    details = dict(line.split(":", 1) for line in shown.splitlines() if ":" in line)
    assert details["trigger"].strip() == "rerun" and details["rerun of"].strip() == original["id"]
    assert ok(addr, "executions", "get", made["id"]).count(original["id"]) == 1  # its "rerun of" line
    bad = schedctl(addr, "executions", "rerun", "nope")
    assert bad.returncode == 13 and "id" in bad.stderr, bad.stderr
    missing = schedctl(addr, "executions", "rerun", f"{MISSING}-1795822485123")
    assert missing.returncode == 15 and missing.stderr.startswith("error: NOT_FOUND: "), missing.stderr


def test_pause_resume_delete(addr: str) -> None:
    task_id = ok_json(addr, "create", "--name", "p", "--cron", "@daily")["id"]
    assert "state:" in ok(addr, "pause", task_id) and "paused" in ok(addr, "get", task_id)
    assert ok_json(addr, "resume", task_id)["state"] == "TASK_STATE_ACTIVE"
    assert ok(addr, "delete", task_id).strip() == f"deleted {task_id}"
    gone = schedctl(addr, "delete", task_id)
    assert gone.returncode == 15
    assert gone.stderr.startswith("error: NOT_FOUND: ")


def test_not_found_exit_code_and_message(addr: str) -> None:
    for args in (
        ["get", MISSING],
        ["pause", MISSING],
        ["run", MISSING],
        ["executions", "get", f"{MISSING}-1795822485123"],
    ):
        proc = schedctl(addr, *args)
        assert proc.returncode == 10 + grpc.StatusCode.NOT_FOUND.value[0] == 15, args
        assert proc.stderr.startswith("error: NOT_FOUND: "), proc.stderr
        assert proc.stdout == ""


def test_invalid_argument_exit_code_and_field_violations(addr: str) -> None:
    proc = schedctl(
        addr, "create", "--name", "", "--cron", "* * * * *", "--tz", "Mars/Olympus", "--http-url", "ftp://x"
    )
    assert proc.returncode == 10 + grpc.StatusCode.INVALID_ARGUMENT.value[0] == 13
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("error: INVALID_ARGUMENT: ")
    violations = {line.strip().split(":")[0] for line in lines[1:]}
    assert violations == {"task.name", "task.schedule.cron.time_zone", "task.target.http.url"}
    assert schedctl(addr, "list").stdout.splitlines()[1:] == []  # nothing was created


def test_usage_errors_exit_2_without_calling(addr: str) -> None:
    for args, fragment in (
        (["create", "--name", "x", "--at", "2030-01-01T00:00:00"], "has no offset"),
        (
            ["create", "--name", "x", "--cron", "@daily", "--timeout", "soon"],
            "--timeout: expected a duration",
        ),
        (["create", "--name", "x", "--cron", "@daily", "--payload", "[1]"], "expected a JSON object"),
        (["create", "--name", "x", "--cron", "@daily", "--method", "GET"], "need an http target"),
        (["create", "--name", "x"], "a schedule is required"),
        (["create", "--name", "x", "--cron", "@daily", "--at", "+1h"], "not allowed with"),
        (["list", "--state", "sleepy"], "invalid choice"),
        (["list", "--limit", "0"], "expected a positive integer"),
    ):
        proc = schedctl(addr, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert fragment in proc.stderr, (args, proc.stderr)


def test_unreachable_api_is_unavailable() -> None:
    proc = schedctl(f"127.0.0.1:{free_port()}", "list", "--rpc-timeout", "5")
    assert proc.returncode == 10 + grpc.StatusCode.UNAVAILABLE.value[0] == 24
    assert proc.stderr.startswith("error: UNAVAILABLE: ")


class _Recorder(pb.task_service_grpc.TaskServiceServicer):
    def __init__(self) -> None:
        self.metadata: list[tuple[str, str]] = []

    def GetTask(self, request: pb.GetTaskRequest, context: grpc.ServicerContext) -> pb.GetTaskResponse:
        self.metadata = list(context.invocation_metadata())
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "not for you")


@pytest.fixture()
def recorder() -> Iterator[tuple[str, _Recorder]]:
    servicer = _Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb.task_service_grpc.add_TaskServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(0)


def test_token_is_sent_as_bearer_metadata_and_never_printed(recorder: tuple[str, _Recorder]) -> None:
    addr, servicer = recorder
    secret = "s3cr3t-t0ken"
    proc = schedctl(addr, "get", MISSING, env={"SCHEDCTL_TOKEN": secret})
    assert proc.returncode == 10 + grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert ("authorization", f"Bearer {secret}") in servicer.metadata
    assert secret not in proc.stdout + proc.stderr
    proc = schedctl(addr, "get", MISSING, "--token", "flag-token", env={"SCHEDCTL_TOKEN": secret})
    assert ("authorization", "Bearer flag-token") in servicer.metadata  # the flag wins
    schedctl(addr, "get", MISSING)
    assert all(key != "authorization" for key, _ in servicer.metadata)


@pytest.fixture()
def live(redis_srv: RedisServer, rds) -> Iterator[Suite]:
    with suite(redis_srv) as s:
        yield s


def test_run_and_executions_list_get_follow(live: Suite) -> None:
    addr = live.api.target
    task_id = ok_json(addr, "create", "--name", "job", "--at", "+1s", "--payload", '{"x": 1}')["id"]
    wait_for(lambda: any(e.status == S.EXECUTION_STATUS_SUCCEEDED for e in live.executions(task_id)), 15)
    [scheduled] = ok_json(addr, "executions", "list", "--task", task_id)["executions"]
    assert scheduled["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert scheduled["trigger"] == "EXECUTION_TRIGGER_SCHEDULE"
    shown = ok(addr, "executions", "get", scheduled["id"])
    assert "succeeded" in shown and '"x"' in shown  # the log target's output holds the payload

    follow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "executions",
            "follow",
            "--task",
            task_id,
            "--interval",
            "0.2",
            "-o",
            "json",
        ],
        cwd=ROOT,
        env={**os.environ, "API_ADDR": addr, "SCHEDCTL_PLAINTEXT": "true"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal sends it: a suite run in a background job (`.ci/run &`) ignores
        # SIGINT, and a child would inherit that and never see the test's SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    events: list[dict] = []
    reader = threading.Thread(target=lambda: events.extend(json.loads(line) for line in follow.stdout))  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: len(events) >= 1, 15)  # the execution already there, within --since 5m
        assert events[0]["id"] == scheduled["id"]
        manual = ok_json(addr, "run", task_id)
        assert manual["status"] == "EXECUTION_STATUS_PENDING"
        assert manual["trigger"] == "EXECUTION_TRIGGER_MANUAL"

        def manual_done() -> bool:
            return any(
                e["id"] == manual["id"] and e["status"] == "EXECUTION_STATUS_SUCCEEDED" for e in events
            )

        wait_for(manual_done, 15)
    finally:
        follow.send_signal(signal.SIGINT)
        code = follow.wait(10)
        reader.join(5)
    assert code == 0, follow.stderr.read() if follow.stderr else ""
    assert [e["id"] for e in events].count(scheduled["id"]) == 1, "an unchanged execution is printed once"
    statuses = [e["status"] for e in events if e["id"] == manual["id"]]
    assert statuses[-1] == "EXECUTION_STATUS_SUCCEEDED"
    assert len(statuses) == len(set(statuses)), "each change is printed once"

    recent = ok_json(addr, "executions", "list", "--since", "10m", "--status", "succeeded")["executions"]
    assert {e["id"] for e in recent} == {scheduled["id"], manual["id"]}
    assert ok_json(addr, "executions", "list", "--until", scheduled["nominalTime"]) == {"executions": []}
    table = ok(addr, "executions", "list", "--task", task_id, "--status", "succeeded").splitlines()
    assert table[0].split()[:3] == ["ID", "TASK", "STATUS"]
    assert {line.split()[0] for line in table[1:]} == {scheduled["id"], manual["id"]}
    assert {line.split()[1] for line in table[1:]} == {"job"}  # the task's name, not its id


def test_stats_counts_what_ran(live: Suite) -> None:
    addr = live.api.target
    task_id = ok_json(addr, "create", "--name", "counted", "--at", "+1s")["id"]
    wait_for(lambda: any(e.status == S.EXECUTION_STATUS_SUCCEEDED for e in live.executions(task_id)), 15)
    ok_json(addr, "create", "--name", "idle", "--cron", "@daily")
    doc = ok_json(addr, "stats", "--window", "10m")
    tasks = {c["state"]: int(c.get("count", 0)) for c in doc["tasks"]}
    assert tasks["TASK_STATE_COMPLETED"] == 1 and tasks["TASK_STATE_ACTIVE"] == 1
    assert doc["executions"] == [{"status": "EXECUTION_STATUS_SUCCEEDED", "count": "1"}]
    assert int(doc["lag"]["count"]) == 1
    [usage] = doc["namespaces"]
    assert int(usage.pop("taskBytes")) > 0
    assert usage == {
        "namespace": "default",
        "tasks": "2",
        "maxTasks": "100000",
        "maxTaskBytes": str(256 << 20),
        "maxRunsPerMinute": "600",
    }
    table = ok(addr, "stats")
    assert "succeeded 1" in table and "completed 1" in table
    assert (
        "task quotas" in table
        and "default 2/100000 tasks" in table
        and f"/{256 << 20} bytes 0/600 runs" in table
    )
    bad = schedctl(addr, "stats", "--window", "90s")
    assert bad.returncode == 13 and "window" in bad.stderr


def stored_task(rds, task_id: str) -> pb.Task:
    raw = rds.hget(Keys().task(task_id), "spec")
    assert raw is not None
    return pb.Task.FromString(raw)


def test_secret_headers_from_a_file_are_stored_and_never_shown(addr: str, rds, tmp_path: Path) -> None:
    secret = "Bearer s3cret-cli-7f2a"
    (tmp_path / "token").write_text(secret + "\n")
    args = ["create", "--name", "s", "--cron", "@daily", "--http-url", "https://example.com/hook"]
    args += ["--header", "X-Team: ops", "--secret-header", f"Authorization: @{tmp_path / 'token'}"]
    shown = ok(addr, *args)
    assert "header Authorization" in shown and "(secret)" in shown and "X-Team" in shown
    task_id = next(line.split()[-1] for line in shown.splitlines() if line.startswith("id"))
    assert dict(stored_task(rds, task_id).target.http.secret_headers) == {"Authorization": secret}
    for out in (shown, ok(addr, "get", task_id), ok(addr, "get", task_id, "-o", "json")):
        assert "s3cret" not in out

    # An update that does not name it keeps it; naming it anew replaces it; removing drops it.
    ok(addr, "update", task_id, "--header", "X-Other: 1")
    assert dict(stored_task(rds, task_id).target.http.secret_headers) == {"Authorization": secret}
    ok(addr, "update", task_id, "--secret-header", "X-Api-Key: k-123")
    assert dict(stored_task(rds, task_id).target.http.secret_headers) == {
        "Authorization": secret,
        "X-Api-Key": "k-123",
    }
    ok(addr, "update", task_id, "--remove-header", "authorization", "--remove-header", "X-Other")
    http = stored_task(rds, task_id).target.http
    assert (dict(http.secret_headers), dict(http.headers)) == ({"X-Api-Key": "k-123"}, {"X-Team": "ops"})

    # Making a plain header secret (or a secret one plain) moves it: a header is one or the other.
    ok(addr, "update", task_id, "--secret-header", "x-team: hidden-now")
    http = stored_task(rds, task_id).target.http
    assert (dict(http.headers), http.secret_headers["x-team"]) == ({}, "hidden-now")
    ok(addr, "update", task_id, "--header", "X-Team: ops")
    http = stored_task(rds, task_id).target.http
    assert (dict(http.headers), dict(http.secret_headers)) == ({"X-Team": "ops"}, {"X-Api-Key": "k-123"})

    missing = schedctl(addr, "update", task_id, "--remove-header", "Nope")
    assert missing.returncode == 2 and "no header 'Nope'" in missing.stderr
    empty = schedctl(addr, "create", "--name", "e", "--cron", "@daily", "--http-url", "https://example.com/x",
                     "--secret-header", "Authorization:")  # fmt: skip
    assert empty.returncode == 2 and "empty" in empty.stderr
    log = schedctl(addr, "create", "--name", "l", "--cron", "@daily", "--secret-header", "A: b")
    assert log.returncode == 2 and "need an http target" in log.stderr


def test_command_target_flags(addr: str, rds) -> None:
    refused = schedctl(addr, "create", "--name", "c", "--cron", "@daily", "--command", "/bin/echo")
    assert refused.returncode == 10 + grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "EXECUTOR_COMMAND_TARGETS" in refused.stderr
    # As a scheduler linked to a command executor does: vouch for one.
    rds.hset(Keys().capabilities, "command", int(rds.time()[0]) * 1000 + 60_000)
    shown = ok(
        addr, "create", "--name", "c", "--cron", "@daily", "--command", "/bin/echo",
        "--arg", "hello world", "--arg=-n", "--env", "MODE=nightly", "--workdir", "/tmp",
    )  # fmt: skip
    assert "command /bin/echo" in shown and "'hello world' -n" in shown and "MODE" in shown
    task_id = next(line.split()[-1] for line in shown.splitlines() if line.startswith("id"))
    command = stored_task(rds, task_id).target.command
    assert (command.program, list(command.args), dict(command.env), command.working_dir) == (
        "/bin/echo",
        ["hello world", "-n"],
        {"MODE": "nightly"},
        "/tmp",
    )
    ok(addr, "update", task_id, "--arg", "bye")
    assert list(stored_task(rds, task_id).target.command.args) == ["bye"], "--arg replaces the list"
    wrong = schedctl(addr, "create", "--name", "w", "--cron", "@daily", "--arg", "x")
    assert wrong.returncode == 2 and "need a command target" in wrong.stderr


def test_secret_env_from_a_file_is_stored_and_never_shown(addr: str, rds, tmp_path: Path) -> None:
    secret = "s3cret-cli-env-91c0"
    (tmp_path / "token").write_text(secret + "\n")
    rds.hset(Keys().capabilities, "command", int(rds.time()[0]) * 1000 + 60_000)  # a command executor
    shown = ok(addr, "create", "--name", "c", "--cron", "@daily", "--command", "/bin/true",
               "--env", "MODE=nightly", "--secret-env", f"TOKEN=@{tmp_path / 'token'}")  # fmt: skip
    assert "env TOKEN" in shown and "(secret)" in shown and "MODE" in shown and secret not in shown
    task_id = next(line.split()[-1] for line in shown.splitlines() if line.startswith("id"))
    assert dict(stored_task(rds, task_id).target.command.secret_env) == {"TOKEN": secret}
    got = ok(addr, "get", task_id) + json.dumps(ok_json(addr, "get", task_id))
    assert "TOKEN" in got and secret not in got
    # An update that names other things keeps the stored value (the api returns names only).
    ok(addr, "update", task_id, "--secret-env", "API_KEY=k-123", "--arg", "x")
    command = stored_task(rds, task_id).target.command
    assert dict(command.secret_env) == {"TOKEN": secret, "API_KEY": "k-123"}
    # Making a plain variable secret (or a secret one plain) moves it: a variable is one or the other.
    ok(addr, "update", task_id, "--secret-env", "MODE=hidden-now", "--env", "TOKEN=plain-now")
    command = stored_task(rds, task_id).target.command
    assert (dict(command.env), dict(command.secret_env)) == (
        {"TOKEN": "plain-now"},
        {"API_KEY": "k-123", "MODE": "hidden-now"},
    )
    empty = schedctl(addr, "update", task_id, "--secret-env", "TOKEN=")
    assert empty.returncode == 2 and "empty" in empty.stderr
    log = schedctl(addr, "create", "--name", "l", "--cron", "@daily", "--secret-env", "A=b")
    assert log.returncode == 2 and "need a command target" in log.stderr
