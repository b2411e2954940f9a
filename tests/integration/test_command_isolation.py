"""Command targets cannot read the executor's secrets (docs/security.md, "Safe targets").

A real executor process running as root, with a canary variable, SECRET_KEYS and a TLS key only
root may read, runs programs as EXECUTOR_COMMAND_USER=65534 that try /proc/<executor>/environ,
mem and fd, the key file and `env`: no canary appears in what they print. An executor running as
an unprivileged user (no user switch) is non-dumpable, so even its own uid cannot read its /proc
entries. And the executor refuses to start when it would be unsafe: root with command targets
and no EXECUTOR_COMMAND_USER, an unknown user, a key file that user could read.

The tests run as root (they switch users for real); programs run as uid 65534 use a Python that
user can execute (command_python).
"""

from __future__ import annotations

import atexit
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schedcore import ipb, pb
from schedcore.channels import ChannelSecurity, channel
from schedcore.sealing import new_key
from services.executor.isolation import COMMAND_LANG, COMMAND_PATH
from tests.integration.command_support import NOBODY, command_python
from tests.integration.test_executor import SUCCEEDED, SchedulerStream, item
from tests.integration.test_executor_process import clean_env
from tests.support import free_port, wait_for
from tests.tls_support import Issued, Pki

ROOT = Path(__file__).resolve().parents[2]
CANARY_VARIABLE = "ISOLATION_CANARY"
SITE_PACKAGES = sysconfig.get_paths()["purelib"]


def as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _runs_as_nobody(python: str, env: dict[str, str], cwd: Path = ROOT) -> bool:
    probe = [python, "-c", "import grpc, cryptography, services.executor.app"]
    try:
        done = subprocess.run(probe, cwd=cwd, env=env, preexec_fn=as_nobody, capture_output=True, timeout=60)
    except PermissionError:  # the interpreter itself is out of its reach
        return False
    return done.returncode == 0


# The executor's imports, listed by a fresh interpreter: the top-level entries of site-packages
# that a copy for uid 65534 needs.
_IMPORTS_PROBE = (
    "import os, sys, sysconfig, services.executor.__main__, services.executor.app; "
    "sp = sysconfig.get_paths()['purelib']; "
    "print('\\n'.join(sorted({os.path.relpath(m.__file__, sp).split(os.sep)[0] "
    "for m in list(sys.modules.values()) "
    "if (getattr(m, '__file__', None) or '').startswith(sp + os.sep)})))"
)


@functools.cache
def _readable_copy() -> Path:
    """The executor's code and the packages it imports, copied where uid 65534 may read them: a
    checkout (or its virtualenv) under a directory only root may enter (CI clones into a mktemp
    folder, mode 0700) is out of that user's reach."""
    top = Path(tempfile.mkdtemp(prefix="nobody-executor-"))
    top.chmod(0o755)
    atexit.register(shutil.rmtree, top, True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("schedcore", "services"):
        shutil.copytree(ROOT / package, top / package, ignore=skip)
    listed = subprocess.run(
        [sys.executable, "-c", _IMPORTS_PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    site = top / "site"
    site.mkdir()
    for name in listed:
        source = Path(SITE_PACKAGES) / name
        if source.is_dir():
            shutil.copytree(source, site / name, ignore=skip)
        elif not name.startswith("__editable__"):
            shutil.copy2(source, site / name)
    for path in (top, *top.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644 | (path.stat().st_mode & 0o111))
    return top


def nobody_executor_python() -> tuple[str, dict[str, str]]:
    """An interpreter and PYTHONPATH with which uid 65534 can run the executor: this one, or
    (when it lives under a directory only root may enter) the system's with a readable copy of
    our code and packages."""
    if _runs_as_nobody(sys.executable, clean_env()):
        return sys.executable, {}
    copy = _readable_copy()
    extra = {"PYTHONPATH": os.pathsep.join([str(copy), str(copy / "site")])}
    python = command_python()
    if _runs_as_nobody(python, {**clean_env(), **extra}, cwd=copy):
        return python, extra
    raise AssertionError(f"no Python can run the executor as uid {NOBODY}")


@dataclass
class Executor:
    proc: subprocess.Popen[bytes]
    target: str
    security: ChannelSecurity
    err: Path

    def stream(self) -> SchedulerStream:
        return SchedulerStream(self.target, auto_ack=True, channel=channel(self.target, self.security))

    def serving(self) -> bool:
        assert self.proc.poll() is None, self.err.read_text()
        try:
            with channel(self.target, self.security) as ch:
                request = health_pb2.HealthCheckRequest(service="")
                status = health_pb2_grpc.HealthStub(ch).Check(request, timeout=1).status
        except grpc.RpcError:
            return False
        return bool(status == health_pb2.HealthCheckResponse.SERVING)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_executor(folder: Path, env: dict[str, str], security: ChannelSecurity, **popen: Any) -> Executor:
    port = free_port()
    full = clean_env(
        GRPC_HOST="127.0.0.1",
        GRPC_PORT=str(port),
        SHUTDOWN_GRACE_SECONDS="0.5",
        INSTANCE_ID="isolated",
        REDIS_URL="redis://127.0.0.1:1/0",  # never used: the executor has no Redis
        EXECUTOR_COMMAND_TARGETS="true",
        **env,
    )
    err = folder / "executor.err"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            popen.pop("argv", [sys.executable, "-m", "services.executor"]),
            cwd=ROOT,
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            **popen,
        )
    ex = Executor(proc, f"127.0.0.1:{port}", security, err)
    try:
        wait_for(ex.serving, timeout=30)
    except BaseException:
        ex.stop()
        raise
    return ex


def run(ex: Executor, works: list[ipb.WorkItem]) -> dict[str, ipb.WorkResult]:
    s = ex.stream()
    try:
        s.send(demand=len(works))
        s.wait_granted(len(works))
        s.send(works)
        s.wait_results(len(works), timeout=30)
        return {r.execution_id: r for r in s.results}
    finally:
        s.close()


def command(program: str, *args: str, **fields: Any) -> ipb.WorkItem:
    return item(pb.Target(command=pb.CommandTarget(program=program, args=list(args), **fields)), timeout_s=10)


# Runs as the command user: tries the executor's memory and descriptors, prints what it got.
# It prints FOUND (never the canary itself) if the canary's bytes are in the memory it read.
MEM_PROBE = """
import os, sys
pid, needle = sys.argv[1], bytes.fromhex(sys.argv[2])
try:
    names = os.listdir(f"/proc/{pid}/fd")
    print("fd listed:", len(names))
    for name in names:
        try:
            print("fd", name, "->", os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError as exc:
            print("fd", name, exc)
except OSError as exc:
    print("fd:", exc)
try:
    with open(f"/proc/{pid}/maps") as m, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in m:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(min(end - start, 64 << 20)):
                    print("FOUND in", span)
                    break
            except (OSError, OverflowError, ValueError):
                pass
        else:
            print("mem: read, no canary")
except OSError as exc:
    print("mem:", exc)
"""


def test_programs_cannot_read_the_executors_environment_memory_or_key(open_dir: Path) -> None:
    pki = Pki(open_dir)
    issued = pki.issue()
    os.chmod(issued.key, 0o600)  # root's own, as a Secret mounted with defaultMode 0400 would be
    os.chown(issued.key, 0, 0)
    canary = f"canary-{secrets.token_hex(12)}"
    sealing_key = new_key()
    env = {
        **pki.server_env(issued),
        "EXECUTOR_ALLOWED_CLIENTS": "*",  # TLS without client certificates: who calls is not the point
        "EXECUTOR_COMMAND_USER": str(NOBODY),
        "SECRET_KEYS": sealing_key,
        CANARY_VARIABLE: canary,
    }
    ex = start_executor(open_dir, env, pki.client())
    pid = str(ex.proc.pid)
    py = command_python()
    try:
        probes = {
            "environ": command(
                "/bin/sh", "-c", f"tr '\\0' '\\n' </proc/$PPID/environ; cat /proc/{pid}/environ"
            ),
            "mem": command(py, "-c", MEM_PROBE, pid, canary.encode().hex()),
            "key": command("cat", str(issued.key)),
            "env": command("env", env={"TASK_VAR": "mine"}),
            "who": command(
                "/bin/sh",
                "-c",
                "id -u; id -g; id -G; umask; pwd; echo x > /tmp/umask-probe-$$; "
                "stat -c %a /tmp/umask-probe-$$; rm -f /tmp/umask-probe-$$",
            ),
        }
        results = run(ex, list(probes.values()))
    finally:
        ex.stop()
    out = {name: results[w.execution_id].result.output for name, w in probes.items()}
    key_body = [line for line in issued.key.read_text().splitlines() if line and not line.startswith("-----")]
    for name, text in out.items():
        assert canary not in text, f"{name} printed the executor's canary variable"
        assert sealing_key not in text, f"{name} printed SECRET_KEYS"
        assert not any(line in text for line in key_body), f"{name} printed the TLS key"
        assert "FOUND" not in text, f"{name} found the canary in the executor's memory"

    assert "Permission denied" in out["environ"], out["environ"]
    assert "mem: [Errno 13] Permission denied" in out["mem"], out["mem"]
    assert "fd: [Errno 13] Permission denied" in out["mem"], out["mem"]
    assert "Permission denied" in out["key"], out["key"]
    env_result = results[probes["env"].execution_id]
    assert env_result.status == SUCCEEDED, env_result.status_message
    assert dict(line.split("=", 1) for line in out["env"].splitlines()) == {
        "TASK_VAR": "mine",
        "PATH": COMMAND_PATH,
        "HOME": "/",  # nobody's home (/nonexistent) does not exist
        "LANG": COMMAND_LANG,
        "TASKSCHED_EXECUTION_ID": probes["env"].execution_id,
    }
    assert out["who"].split() == ["65534", "65534", "65534", "0077", "/", "600"], out["who"]


def test_an_unprivileged_executor_is_not_dumpable_even_to_its_own_uid(open_dir: Path) -> None:
    # Without a user switch (the executor is not root), programs share its uid: only the
    # executor's non-dumpable flag keeps them out of /proc/<executor>.
    python, extra = nobody_executor_python()
    canary = f"canary-{secrets.token_hex(12)}"
    env = {"GRPC_PLAINTEXT": "true", CANARY_VARIABLE: canary, **extra}
    ex = start_executor(
        open_dir,
        env,
        ChannelSecurity(True),
        argv=[python, "-m", "services.executor"],
        preexec_fn=as_nobody,
    )
    pid = str(ex.proc.pid)
    try:
        probes = {
            "environ": command("/bin/sh", "-c", f"id -u; cat /proc/{pid}/environ"),
            "mem": command(command_python(), "-c", MEM_PROBE, pid, canary.encode().hex()),
        }
        results = run(ex, list(probes.values()))
    finally:
        ex.stop()
    out = {name: results[w.execution_id].result.output for name, w in probes.items()}
    assert out["environ"].startswith("65534\n"), out["environ"]
    assert canary not in out["environ"]
    assert "Permission denied" in out["environ"], out["environ"]
    assert "mem: [Errno 13] Permission denied" in out["mem"], out["mem"]
    assert "FOUND" not in out["mem"]


def refusal(folder: Path, python: str = sys.executable, **env: str) -> str:
    """Starts an executor that must refuse to start: exit status 2, its stderr returned. With
    another `python` (nobody_executor_python), it runs as uid 65534."""
    full = clean_env(GRPC_PORT=str(free_port()), EXECUTOR_COMMAND_TARGETS="true", **env)
    argv = [python, "-m", "services.executor"]
    popen: dict[str, Any] = {} if python == sys.executable else {"preexec_fn": as_nobody}
    done = subprocess.run(argv, cwd=ROOT, env=full, capture_output=True, text=True, timeout=20, **popen)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    return done.stderr


def test_root_with_command_targets_and_no_command_user_refuses_to_start(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "this test is about an executor running as root"
    err = refusal(tmp_path)
    assert "executor: configuration error: EXECUTOR_COMMAND_USER is not set" in err, err
    assert "runs as root" in err


def test_an_unknown_or_root_command_user_refuses_to_start(tmp_path: Path) -> None:
    err = refusal(tmp_path, EXECUTOR_COMMAND_USER="no-such-user-here")
    assert "configuration error: EXECUTOR_COMMAND_USER: no user named 'no-such-user-here'" in err, err
    err = refusal(tmp_path, EXECUTOR_COMMAND_USER="0:65534")
    assert "EXECUTOR_COMMAND_USER: '0:65534' is root" in err, err


def _issued_with(pki: Pki, mode: int, uid: int, gid: int) -> Issued:
    issued = pki.issue()
    os.chown(issued.key, uid, gid)
    os.chmod(issued.key, mode)
    return issued


@pytest.mark.parametrize(
    ("mode", "uid", "gid"),
    [
        (0o644, 0, 0),  # anyone may read it
        (0o640, 0, NOBODY),  # the command user's group may
        (0o400, NOBODY, 0),  # the command user owns it
    ],
)
def test_a_key_file_the_command_user_can_read_refuses_to_start(
    open_dir: Path, mode: int, uid: int, gid: int
) -> None:
    pki = Pki(open_dir)
    issued = _issued_with(pki, mode, uid, gid)
    err = refusal(open_dir, EXECUTOR_COMMAND_USER="nobody", **pki.server_env(issued))
    expected = f"configuration error: TLS_KEY_FILE: '{issued.key}' is readable by EXECUTOR_COMMAND_USER"
    assert expected in err, err


def test_an_executor_that_cannot_switch_users_refuses_to_start(open_dir: Path) -> None:
    python, extra = nobody_executor_python()
    err = refusal(open_dir, python, EXECUTOR_COMMAND_USER=str(NOBODY), **extra)
    assert "error: EXECUTOR_COMMAND_USER: running programs as another user needs root" in err, err
    assert "this executor runs as uid 65534" in err
