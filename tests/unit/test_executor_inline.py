"""An inline target's attempt (the log target) runs to its end while the executor takes the
request that brought it: no task, no timer, the slot free again at once; other targets still
run in tasks of their own."""

import asyncio

from schedcore import ipb, pb
from schedcore.settings import Settings
from services.executor.core import Engine
from services.executor.runner import Runner
from services.executor.targets.base import AttemptContext, Outcome, Target
from services.executor.targets.log import LogTarget

SUCCEEDED = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
FAILED = pb.ExecutionStatus.EXECUTION_STATUS_FAILED


class Slow(Target):
    async def run(self, item: ipb.WorkItem, ctx: AttemptContext) -> Outcome:
        await asyncio.sleep(30)
        raise AssertionError("not reached")


class Broken(Target):
    inline = True

    def run_now(self, item: ipb.WorkItem, ctx: AttemptContext) -> Outcome:
        raise RuntimeError("bug")


def _engine(targets: dict[str, Target]) -> Engine:
    runner = Runner("ex-1", 4096, targets)
    return Engine(slots=2, lease_s=10.0, executor_id="ex-1", runner=runner, reporter=None)  # type: ignore[arg-type]


def _items(kind: str, n: int) -> list[ipb.WorkItem]:
    out = []
    for i in range(n):
        item = ipb.WorkItem(
            execution_id=f"{i:016x}-{1_700_000_000_000 + i:013d}", lease_token=7 + i, attempt=1
        )
        getattr(item.target, kind).SetInParent()
        out.append(item)
    return out


def test_log_attempts_end_before_the_request_returns_and_free_their_slots() -> None:
    async def main() -> None:
        engine = _engine({"log": LogTarget(Settings())})
        stream = engine.open_stream("scheduler-1")
        engine.on_request(stream, ipb.ExecuteRequest(demand=5))
        granted = stream.outbox.grant
        assert granted == 2  # the slots
        engine.on_request(stream, ipb.ExecuteRequest(items=_items("log", 2), demand=5))
        # Done already: nothing running, nothing queued, no task made for them.
        assert not engine.attempts and engine.active == 0 and not engine.queued
        assert asyncio.all_tasks() == {asyncio.current_task()}
        results = stream.outbox.take_results()
        assert [r.status for r in results] == [SUCCEEDED, SUCCEEDED]
        assert all(r.start_time.seconds and r.finish_time.seconds for r in results)
        assert stream.outbox.grant > granted  # the slots were granted again at once

    asyncio.run(main())


def test_an_inline_target_that_raises_fails_its_attempt_retryable() -> None:
    async def main() -> None:
        engine = _engine({"log": Broken(Settings())})
        stream = engine.open_stream("scheduler-1")
        engine.on_request(stream, ipb.ExecuteRequest(demand=1))
        engine.on_request(stream, ipb.ExecuteRequest(items=_items("log", 1)))
        (result,) = stream.outbox.take_results()
        assert result.status == FAILED and result.retryable
        assert "RuntimeError: bug" in result.status_message

    asyncio.run(main())


def test_other_targets_still_run_in_tasks_of_their_own() -> None:
    async def main() -> None:
        engine = _engine({"http": Slow(Settings())})
        stream = engine.open_stream("scheduler-1")
        engine.on_request(stream, ipb.ExecuteRequest(demand=1))
        engine.on_request(stream, ipb.ExecuteRequest(items=_items("http", 1)))
        assert engine.active == 1 and len(engine.attempts) == 1
        (attempt,) = engine.attempts.values()
        assert attempt.task is not None and not attempt.task.done()
        attempt.task.cancel()
        await asyncio.gather(attempt.task, return_exceptions=True)

    asyncio.run(main())
