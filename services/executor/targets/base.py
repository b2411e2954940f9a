"""What every target kind shares: the outcome of one attempt, the attempt's context, the base
class a kind implements and the one way outputs are bounded (secrets are scrubbed from them in
scrub.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from schedcore import pb
from schedcore.ipb import WorkItem
from schedcore.settings import Settings

Status: TypeAlias = pb.ExecutionStatus
SUCCEEDED: Status = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
FAILED: Status = pb.ExecutionStatus.EXECUTION_STATUS_FAILED


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as a target reports it (the runner adds times, ids and the token)."""

    status: Status
    output: str = ""
    output_truncated: bool = False
    # Set by the http target: the response's status code.
    http_status: int | None = None
    # Set by the command target: the program's exit status (negative: the signal that ended it).
    exit_code: int | None = None
    status_message: str = ""
    retryable: bool = False

    @classmethod
    def failed(cls, message: str, *, retryable: bool, **fields: object) -> Outcome:
        return cls(FAILED, status_message=message, retryable=retryable, **fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class AttemptContext:
    """What a target may know about the attempt besides the item itself."""

    executor_id: str
    start_time: datetime
    # Bound, in UTF-8 bytes, of the output an attempt records.
    output_limit: int
    # The task's timeout; only targets with `own_timeout` read it.
    timeout_s: float = 0.0


class Target:
    """One kind of target. The executor makes one instance per kind at start-up (so a kind may
    hold shared resources, such as a connection pool) and closes it on shutdown.

    `run` must return an Outcome for every failure it understands; an exception it raises ends
    the attempt FAILED and retryable. The runner enforces the attempt's timeout by cancelling
    `run`, so a target needs no timeout of its own.
    """

    # True: the target ends an attempt at ctx.timeout_s itself (reporting TIMED_OUT with what it
    # learned), and the runner's timeout, a little later, is only a backstop.
    own_timeout = False
    # True: the work is small, bounded and never waits (the log target), so the executor runs the
    # attempt at once through run_now, with no task or timer of its own (docs/engine.md,
    # "Dispatch").
    inline = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def run(self, item: WorkItem, ctx: AttemptContext) -> Outcome:
        return self.run_now(item, ctx)

    def run_now(self, item: WorkItem, ctx: AttemptContext) -> Outcome:
        """The attempt of an inline target; other targets implement run."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the target holds; called once, after the last attempt ended."""


def bound_text(text: str, limit: int) -> tuple[str, bool]:
    """`text` cut to at most `limit` UTF-8 bytes on a character boundary, and whether it was cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", "ignore"), True
