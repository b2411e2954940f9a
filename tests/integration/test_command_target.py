"""The command target on a real executor (in-process, over gRPC) running real programs: output,
exit codes, the timeout reaching every process the program started, bounded output, the
environment it gets, no shell, programs that cannot start, shutdown, and the capability
announcement schedulers route by."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct

from schedcore import ipb, pb
from services.executor.app import build as build_executor
from services.executor.isolation import COMMAND_LANG, COMMAND_PATH
from tests.integration.command_support import COMMAND_USER, ROOT_TESTS, command_python
from tests.integration.test_executor import (
    FAILED,
    PENDING,
    SUCCEEDED,
    TIMED_OUT,
    FakeScheduler,
    SchedulerStream,
    assert_complete,
    executor,
    executor_settings,
    item,
    scheduler_stream,
)
from tests.support import ServiceThread, free_port, wait_for

# Programs run as EXECUTOR_COMMAND_USER when the tests run as root: a Python that user can run.
PY = command_python()


def command_item(program: str, *args: str, timeout_s: float = 10.0, **command: Any) -> ipb.WorkItem:
    return item(
        pb.Target(command=pb.CommandTarget(program=program, args=list(args), **command)), timeout_s=timeout_s
    )


def run_items(items: list[ipb.WorkItem], **settings: Any) -> dict[str, ipb.WorkResult]:
    settings.setdefault("executor_command_targets", True)
    for name, value in COMMAND_USER.items():
        settings.setdefault(name, value)
    with executor(**settings) as ex, scheduler_stream(ex) as s:
        s.send(demand=len(items))
        s.wait_granted(len(items))
        s.send(items)
        s.wait_results(len(items), timeout=30)
        results = {r.execution_id: r for r in s.results}
    for work in items:
        assert_complete(results[work.execution_id], work)
    return results


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_output_exit_code_and_payload_on_stdin() -> None:
    ok = command_item(PY, "-c", "import json, sys; d = json.load(sys.stdin); print('got', d['k'])")
    ok.payload.CopyFrom(Struct(fields={}))
    ok.payload.update({"k": "v ✓"})
    failing = command_item(PY, "-c", "import sys; print('out'); print('bad', file=sys.stderr); sys.exit(3)")
    results = run_items([ok, failing])

    good = results[ok.execution_id]
    assert good.status == SUCCEEDED, good.status_message
    assert good.result.output == "got v ✓\n"
    assert good.result.HasField("command") and good.result.command.exit_code == 0
    assert not good.result.output_truncated

    bad = results[failing.execution_id]
    assert bad.status == FAILED
    assert bad.retryable
    assert bad.result.command.exit_code == 3
    assert bad.status_message == "exited with status 3"
    assert bad.result.output == "out\n[stderr]\nbad\n"


def test_arguments_reach_the_program_verbatim_no_shell(open_dir: Path) -> None:
    marker = open_dir / "touched"
    victim = open_dir / "keep"
    victim.write_text("still here")
    args = [f"$(touch {marker})", f"; rm -f {victim}", "*", f"`touch {marker}`", "$HOME", "a b", "&& id"]
    work = command_item("printf", "%s\\n", *args, working_dir=str(open_dir))
    result = run_items([work])[work.execution_id]
    assert result.status == SUCCEEDED, result.status_message
    assert result.result.output.splitlines() == args
    assert not marker.exists()
    assert victim.read_text() == "still here"


def test_environment_is_the_tasks_own_plus_path_and_execution_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTOR_ONLY_MARKER", "must-not-leak")  # the executor runs in this process
    program = "import json, os; print(json.dumps(dict(os.environ)))"
    default_path = command_item(PY, "-c", program, env={"TASK_VAR": "one"})
    own_path = command_item(PY, "-c", program, env={"PATH": "/opt/bin"})
    results = run_items([default_path, own_path])
    import json

    env = json.loads(results[default_path.execution_id].result.output)
    env.pop("LC_CTYPE", None)  # Python itself may set it at start-up (PEP 538)
    # As another user (the tests run as root): a minimal PATH, its HOME and LANG; else the
    # executor's PATH.
    defaults = {"PATH": COMMAND_PATH, "HOME": "/", "LANG": COMMAND_LANG} if ROOT_TESTS else {}
    assert env == {
        "TASK_VAR": "one",
        "PATH": os.environ["PATH"],
        **defaults,
        "TASKSCHED_EXECUTION_ID": default_path.execution_id,
    }
    env = json.loads(results[own_path.execution_id].result.output)
    assert env["PATH"] == "/opt/bin"
    assert "EXECUTOR_ONLY_MARKER" not in results[own_path.execution_id].result.output


def test_timeout_kills_the_whole_process_group(open_dir: Path) -> None:
    pidfile = open_dir / "grandchild.pid"
    # sh is the program here (the test's choice); its background sleep is a grandchild of the
    # executor that ignores nothing: the group kill must reach it.
    work = command_item(
        "/bin/sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo started; wait", timeout_s=1.0
    )
    started = time.monotonic()
    result = run_items([work])[work.execution_id]
    took = time.monotonic() - started
    assert result.status == TIMED_OUT
    assert result.retryable
    assert result.result.command.exit_code < 0  # killed by a signal
    assert "timeout of 1 s" in result.status_message
    assert result.result.output == "started\n"
    assert took < 8
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not alive(grandchild), timeout=5)


def test_leftover_background_processes_are_killed_when_the_program_exits(open_dir: Path) -> None:
    pidfile = open_dir / "left.pid"
    work = command_item("/bin/sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo done")
    started = time.monotonic()
    result = run_items([work])[work.execution_id]
    assert result.status == SUCCEEDED
    assert result.result.output == "done\n"
    assert time.monotonic() - started < 8, "the pipe held by the leftover did not hold the attempt"
    wait_for(lambda: not alive(int(pidfile.read_text())), timeout=5)


def test_output_is_bounded_and_the_rest_drained() -> None:
    # Far more than a pipe buffer on both streams: a target reading one at a time would hang.
    program = "import sys; sys.stderr.write('e' * 300000); sys.stdout.write('o' * 300000)"
    work = command_item(PY, "-c", program)
    result = run_items([work], output_limit_bytes=1024)[work.execution_id]
    assert result.status == SUCCEEDED
    assert result.result.output_truncated
    assert len(result.result.output.encode()) <= 1024
    assert result.result.output.startswith("o" * 1000)


def test_a_program_that_cannot_start_fails_without_retry(open_dir: Path) -> None:
    missing = command_item("/nonexistent/program")
    not_found = command_item("no-such-program-on-path-xyz")
    bad_dir = command_item("/bin/true", working_dir=str(open_dir / "absent"))
    not_executable = open_dir / "plain.txt"
    not_executable.write_text("hello")
    denied = command_item(str(not_executable))
    nul = command_item("/bin/echo", "a\x00b")  # the api refuses it; the executor must too
    results = run_items([missing, not_found, bad_dir, denied, nul])
    for work in (missing, not_found, bad_dir, denied, nul):
        result = results[work.execution_id]
        assert result.status == FAILED
        assert not result.retryable
        assert result.status_message.startswith("cannot start "), result.status_message
        assert not result.result.HasField("command")
    assert "No such file or directory" in results[missing.execution_id].status_message
    assert "Permission denied" in results[denied.execution_id].status_message
    assert "null byte" in results[nul.execution_id].status_message


def test_capabilities_are_announced_first_only_when_enabled() -> None:
    work = command_item("/bin/true")
    with executor(executor_command_targets=True, **COMMAND_USER) as ex, scheduler_stream(ex) as s:
        wait_for(lambda: bool(s.responses))
        first = s.responses[0]
        assert list(first.capabilities) == ["command"]
        assert first.grant == 0 and not first.results
    with executor() as ex, scheduler_stream(ex) as s:
        s.send(demand=1)
        s.wait_granted(1)
        s.send([work])
        result = s.result(work.execution_id)
        assert not any(r.capabilities for r in s.responses)
    assert result.status == FAILED
    assert not result.retryable
    assert "EXECUTOR_COMMAND_TARGETS" in result.status_message


def test_shutdown_hands_back_a_running_program_and_kills_its_group(open_dir: Path) -> None:
    pidfile = open_dir / "child.pid"
    work = command_item("/bin/sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait", timeout_s=60)
    port = free_port()
    fake = FakeScheduler(port)
    ex = ServiceThread(
        build_executor,
        executor_settings(scheduler_addr=f"127.0.0.1:{port}", executor_command_targets=True, **COMMAND_USER),
    )
    s = SchedulerStream(ex.target, auto_ack=True)
    try:
        s.send(demand=1)
        s.wait_granted(1)
        s.send([work])
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        ex.stop(grace=0.5)
        assert s.ended.wait(10)
    finally:
        s.close()
        fake.stop()
    back = s.result(work.execution_id)
    assert back.status == PENDING
    assert "shutting down" in back.status_message
    wait_for(lambda: not alive(int(pidfile.read_text())), timeout=5)


def test_programs_get_default_sigpipe_and_sigxfsz() -> None:
    # Python (the executor, and the launcher that switches users) ignores both; a program that
    # inherited that would not die writing to a closed pipe (`yes | head -1` would never end).
    work = command_item("grep", "^SigIgn:", "/proc/self/status")
    result = run_items([work])[work.execution_id]
    assert result.status == SUCCEEDED, result.status_message
    ignored = int(result.result.output.split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), f"{sig.name} is ignored: {result.result.output}"
