"""Starting a program as EXECUTOR_COMMAND_USER without fork() in the executor.

subprocess can switch users itself (user=, group=, extra_groups=), but only by fork()ing the
whole executor, whose gRPC threads' fork handlers then run in the child (and abort it, at
random). So the executor starts a small launcher the ordinary way (vfork/posix_spawn, as for
every other program): `python -I -S`, with an empty environment, so nothing of the task's (say
LD_PRELOAD or PYTHONPATH) reaches a process still running as root. The launcher reads what to
run from a pipe (the task's environment never appears on a command line), drops its groups, its
gid and its uid, sets umask 077, enters the working directory as the new user, and execs the
program: same pid, same process group, same standard streams.

It costs one Python start (some 20 ms) per program. If a step fails before the program runs, the
launcher writes [errno, message] to a second pipe (close-on-exec, so a successful exec closes it
empty) and exits; spawn_as raises that OSError as subprocess would, so "cannot start" reads the same
with or without a user switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from asyncio.subprocess import Process
from collections.abc import Mapping, Sequence
from typing import Any

from services.executor.isolation import COMMAND_UMASK, CommandUser

# Everything it needs is imported before the uid changes: the interpreter's own files may be
# out of the new user's reach (os.execvpe imports warnings lazily).
LAUNCHER = """
import json, os, signal, sys, warnings
spec_fd, err_fd = int(sys.argv[1]), int(sys.argv[2])
os.set_inheritable(err_fd, False)  # closed by a successful exec: the parent reads EOF
with os.fdopen(spec_fd, "rb") as f:
    spec = json.loads(f.read())
# Python ignores these; the program gets the defaults, as subprocess's restore_signals gives.
for name in ("SIGPIPE", "SIGXFSZ"):
    signal.signal(getattr(signal, name), signal.SIG_DFL)
try:
    os.setgroups([])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    os.umask(spec["umask"])
    if spec["cwd"]:
        os.chdir(spec["cwd"])
    os.execvpe(spec["program"], [spec["program"], *spec["args"]], spec["env"])
except (OSError, ValueError) as exc:  # ValueError: say, a NUL byte in an argument
    errno = exc.errno or 0 if isinstance(exc, OSError) else 0
    message = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
    os.write(err_fd, json.dumps([errno, message]).encode())
    os._exit(127)
"""


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError), os.fdopen(fd, "wb") as f:
        f.write(data)


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read()


async def spawn_as(
    user: CommandUser,
    program: str,
    args: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    **popen: Any,
) -> Process:
    """The program running as `user`; OSError (as subprocess raises) if it could not start."""
    spec_r, spec_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",  # no PYTHON* variables, no user site
            "-S",  # no site module: nothing but the standard library is imported
            "-c",
            LAUNCHER,
            str(spec_r),
            str(err_w),
            env={},
            pass_fds=(spec_r, err_w),
            close_fds=True,
            **popen,
        )
    except BaseException:
        for fd in (spec_w, err_r):
            os.close(fd)
        raise
    finally:
        os.close(spec_r)
        os.close(err_w)
    spec = {
        "uid": user.uid,
        "gid": user.gid,
        "umask": COMMAND_UMASK,
        "cwd": cwd,
        "program": program,
        "args": list(args),
        "env": dict(env),
    }
    try:
        await asyncio.to_thread(_write_all, spec_w, json.dumps(spec).encode())
        failure = await asyncio.to_thread(_read_all, err_r)  # empty: the exec happened
    except BaseException:  # cancelled (shutdown): the program must not run on unsupervised
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        raise
    if failure:
        await process.wait()
        errno, message = json.loads(failure)
        raise OSError(errno, message)
    return process
