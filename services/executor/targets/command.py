"""The command target: runs a program directly, never through a shell.

Only executors started with EXECUTOR_COMMAND_TARGETS=true have it (docs/security.md, "Safe
targets"). It runs as EXECUTOR_COMMAND_USER when set (services/executor/isolation.py). The program
gets the task's environment (its secret variables opened here, and scrubbed from the output)
and nothing of the executor's, except defaults for what the task does
not set (PATH; as another user a minimal PATH, its HOME and LANG), plus TASKSCHED_EXECUTION_ID (its
idempotency key); the payload as JSON on its standard input; its own session, so the timeout and
shutdown reach every process it started (SIGTERM to the group, SIGKILL after a grace). Standard
output and error are read concurrently and kept up to OUTPUT_LIMIT_BYTES each; the rest is drained
and dropped, so a chatty program never blocks on a full pipe.

The target enforces the task's timeout itself (the runner's own timeout stays as a backstop), so
a program killed for running too long still reports its exit status and the output it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
from asyncio.subprocess import PIPE, Process
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from schedcore import pb
from schedcore.ipb import WorkItem
from schedcore.sealing import Sealer, SealError
from schedcore.settings import Settings
from services.executor.isolation import command_user
from services.executor.launch import spawn_as
from services.executor.targets.base import SUCCEEDED, AttemptContext, Outcome, Target, bound_text
from services.executor.targets.scrub import margin, scrubbed

TIMED_OUT = pb.ExecutionStatus.EXECUTION_STATUS_TIMED_OUT
# Between SIGTERM and SIGKILL of the program's process group.
TERM_GRACE_S = 1.0
# After the program exited, how long its pipes may stay open (a process it left behind holding
# them is killed with its group first, so this only bounds a pathological case).
PIPE_WAIT_S = 2.0
READ_CHUNK = 64 * 1024
EXECUTION_ID_VARIABLE = "TASKSCHED_EXECUTION_ID"


def environment(
    command: pb.CommandTarget,
    execution_id: str,
    secret_env: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The program's environment: the task's variables (secret ones opened), `defaults` (the
    executor's PATH unless given) for those the task does not set, and the execution id. Nothing
    else of the executor's environment."""
    env = {**command.env, **(secret_env or {})}
    for name, value in (defaults or {"PATH": os.environ.get("PATH", os.defpath)}).items():
        env.setdefault(name, value)
    env[EXECUTION_ID_VARIABLE] = execution_id
    return env


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _read_bounded(stream: asyncio.StreamReader | None, limit: int) -> tuple[bytes, bool]:
    """The first `limit` bytes of the stream, and whether more came (those are read and dropped)."""
    data = bytearray()
    more = False
    if stream is None:
        return b"", False
    while chunk := await stream.read(READ_CHUNK):
        room = limit - len(data)
        if room > 0:
            data += chunk[:room]
        if len(chunk) > room:
            more = True
    return bytes(data), more


async def _feed(process: Process, data: bytes) -> None:
    """The payload on stdin; a program that does not read it (or exits early) is fine."""
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        process.stdin.write(data)
        await process.stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        process.stdin.close()


async def _exited(process: Process) -> None:
    """Until the program itself has exited. Process.wait() also waits for its pipes to close,
    which a process it left running in the background may hold open; returncode is set at the
    exit itself, so it is polled alongside (briefly at first, then every 0.2 s)."""
    waiter = asyncio.ensure_future(process.wait())
    delay = 0.01
    try:
        while not waiter.done() and process.returncode is None:
            await asyncio.wait([waiter], timeout=delay)
            delay = min(delay * 2, 0.2)
    finally:
        waiter.cancel()


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with status {code}"


class CommandTarget(Target):
    # The runner leaves the task's timeout to this target (AttemptContext.timeout_s).
    own_timeout = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.sealer = Sealer(settings.secret_keys)
        # Who programs run as (None: the executor's own user); refuses unsafe set-ups.
        self.user = command_user(settings)
        # Process groups of running programs, killed at close if any is left.
        self.groups: set[int] = set()

    async def aclose(self) -> None:
        for pid in list(self.groups):
            _kill_group(pid, signal.SIGKILL)
        self.groups.clear()

    async def run(self, item: WorkItem, ctx: AttemptContext) -> Outcome:
        try:
            opened = self.sealer.open_each(item.target.command.secret_env)  # sealed at rest: opened only here
        except SealError as exc:
            return Outcome.failed(f"secret variable {exc}", retryable=False)
        secrets = [v for v in opened.values() if v]
        wider = dataclasses.replace(ctx, output_limit=ctx.output_limit + margin(secrets))
        return scrubbed(await self._run(item, wider, opened), secrets, ctx.output_limit)

    async def _run(self, item: WorkItem, ctx: AttemptContext, secret_env: dict[str, str]) -> Outcome:
        command = item.target.command
        payload = json.dumps(
            json_format.MessageToDict(item.payload), ensure_ascii=False, separators=(",", ":")
        ).encode()
        user = self.user
        env = environment(command, item.execution_id, secret_env, user.environment() if user else None)
        # Its own session and process group: the timeout reaches every process it starts.
        streams: dict[str, Any] = dict(stdin=PIPE, stdout=PIPE, stderr=PIPE, start_new_session=True)
        try:
            if user is not None:
                cwd = command.working_dir or user.home
                process = await spawn_as(user, command.program, command.args, env, cwd, **streams)
            else:
                process = await asyncio.create_subprocess_exec(
                    command.program,
                    *command.args,
                    env=env,
                    cwd=command.working_dir or None,
                    close_fds=True,
                    **streams,
                )
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            where = f" in {command.working_dir}" if command.working_dir else ""
            return Outcome.failed(f"cannot start {command.program!r}{where}: {reason}", retryable=False)
        self.groups.add(process.pid)
        try:
            return await self._supervise(process, payload, ctx)
        except asyncio.CancelledError:  # executor shutting down: the program does not outlive it
            await self._stop(process)
            raise
        finally:
            _kill_group(process.pid, signal.SIGKILL)  # whatever it left behind
            self.groups.discard(process.pid)

    async def _supervise(self, process: Process, payload: bytes, ctx: AttemptContext) -> Outcome:
        limit = ctx.output_limit
        feeder = asyncio.create_task(_feed(process, payload))
        out = asyncio.create_task(_read_bounded(process.stdout, limit))
        err = asyncio.create_task(_read_bounded(process.stderr, limit))
        timed_out = False
        try:
            try:
                async with asyncio.timeout(ctx.timeout_s):
                    await _exited(process)
            except TimeoutError:
                timed_out = True
                await self._stop(process)
            # Processes the program left behind would hold its pipes open: they go with it.
            _kill_group(process.pid, signal.SIGKILL)
            done, _ = await asyncio.wait([out, err], timeout=PIPE_WAIT_S)
        finally:
            for task in (feeder, out, err):
                task.cancel()
        stdout, cut_out = out.result() if out in done else (b"", True)
        stderr, cut_err = err.result() if err in done else (b"", True)
        text = stdout.decode("utf-8", "replace")
        if stderr:
            text += ("\n" if text and not text.endswith("\n") else "") + "[stderr]\n"
            text += stderr.decode("utf-8", "replace")
        output, cut = bound_text(text, limit)
        truncated = cut or cut_out or cut_err
        code = process.returncode if process.returncode is not None else -signal.SIGKILL
        if timed_out:
            return Outcome(
                TIMED_OUT,
                output=output,
                output_truncated=truncated,
                exit_code=code,
                status_message=f"attempt exceeded its timeout of {ctx.timeout_s:g} s; the program was "
                f"{describe_exit(code)}",
                retryable=True,
            )
        if code == 0:
            return Outcome(SUCCEEDED, output=output, output_truncated=truncated, exit_code=0)
        return Outcome.failed(
            f"{describe_exit(code)}",
            retryable=True,
            output=output,
            output_truncated=truncated,
            exit_code=code,
        )

    async def _stop(self, process: Process) -> None:
        """SIGTERM to the program's group, SIGKILL after TERM_GRACE_S."""
        if process.returncode is None:
            _kill_group(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(TERM_GRACE_S):
                    await _exited(process)
            except TimeoutError:
                pass
        _kill_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, TimeoutError):
            await asyncio.wait_for(_exited(process), PIPE_WAIT_S)
