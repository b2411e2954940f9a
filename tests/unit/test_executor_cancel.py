"""Cancels on the engine itself, where the races can be set up exactly: an attempt cancelled in
the very turn its task was made, one whose target ends in the turn the cancel comes, and a
cancelled attempt beside a shutdown hand-back. Each attempt reports exactly once and frees its
slot and credit."""

import asyncio

from schedcore import ipb, pb
from schedcore.settings import Settings
from services.executor.core import Engine, Stream
from services.executor.runner import Runner
from services.executor.targets.base import SUCCEEDED, AttemptContext, Outcome, Target

CANCELLED = pb.ExecutionStatus.EXECUTION_STATUS_CANCELLED
PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING


class Waiting(Target):
    """Ends when the test resolves the attempt's future; counts the attempts that began."""

    def __init__(self) -> None:
        super().__init__(Settings())
        self.began: list[str] = []
        self.ends: dict[str, asyncio.Future[Outcome]] = {}

    async def run(self, item: ipb.WorkItem, ctx: AttemptContext) -> Outcome:
        self.began.append(item.execution_id)
        end = self.ends.setdefault(item.execution_id, asyncio.get_running_loop().create_future())
        return await end


def _engine(target: Target, slots: int = 2) -> tuple[Engine, Stream]:
    runner = Runner("ex-1", 4096, {"http": target})
    engine = Engine(slots=slots, lease_s=10.0, executor_id="ex-1", runner=runner, reporter=None)  # type: ignore[arg-type]
    stream = engine.open_stream("scheduler-1")
    engine.on_request(stream, ipb.ExecuteRequest(demand=slots))
    return engine, stream


def _item(n: int) -> ipb.WorkItem:
    item = ipb.WorkItem(execution_id=f"{n:016x}-{1_700_000_000_000 + n:013d}", lease_token=7 + n, attempt=1)
    item.target.http.url = "http://example.invalid/"
    return item


def _cancel(*items: ipb.WorkItem) -> ipb.ExecuteRequest:
    return ipb.ExecuteRequest(
        cancels=[
            ipb.executor_pb2.CancelAttempt(execution_id=i.execution_id, lease_token=i.lease_token, reason="r")
            for i in items
        ]
    )


async def _settle(engine: Engine) -> None:
    tasks = {a.task for a in engine.attempts.values() if a.task is not None}
    for _ in range(100):
        await asyncio.sleep(0)
        tasks = {t for t in tasks if not t.done()}
        if not tasks and not engine.attempts:
            return
    raise AssertionError("attempts still held")


def _assert_free(engine: Engine, stream: Stream) -> None:
    assert not engine.attempts and not engine.queued and engine.active == 0
    assert engine.credits.running == 0 and stream.running == 0


def test_an_attempt_cancelled_before_its_task_began_never_runs() -> None:
    async def main() -> None:
        target = Waiting()
        engine, stream = _engine(target)
        work = _item(1)
        engine.on_request(stream, ipb.ExecuteRequest(items=[work]))
        engine.on_request(stream, _cancel(work))  # same turn: its task was made, has not begun
        await _settle(engine)
        (result,) = stream.outbox.take_results()
        assert (result.execution_id, result.status, result.retryable) == (work.execution_id, CANCELLED, False)
        assert result.status_message == "cancelled: r"
        assert target.began == []
        _assert_free(engine, stream)

    asyncio.run(main())


def test_an_attempt_ending_as_the_cancel_comes_reports_once() -> None:
    async def main() -> None:
        target = Waiting()
        engine, stream = _engine(target)
        first, second, third = _item(1), _item(2), _item(3)
        engine.on_request(stream, ipb.ExecuteRequest(items=[first, second]))
        await asyncio.sleep(0)
        assert target.began == [first.execution_id, second.execution_id]
        # Its target returned (the task's wake-up is queued) and the cancel comes in the same turn.
        target.ends[first.execution_id].set_result(Outcome(SUCCEEDED))
        engine.on_request(stream, _cancel(first))
        # This one's attempt has ended and reported: a cancel for it comes late and is ignored.
        target.ends[second.execution_id].set_result(Outcome(SUCCEEDED))
        await _settle(engine)
        engine.on_request(stream, _cancel(second))
        engine.on_request(stream, ipb.ExecuteRequest(demand=1))
        engine.on_request(stream, ipb.ExecuteRequest(items=[third]))
        await asyncio.sleep(0)
        target.ends[third.execution_id].set_result(Outcome(SUCCEEDED))
        engine.on_request(stream, _cancel(third))
        engine.on_request(stream, _cancel(third))  # twice: still one result
        await _settle(engine)
        results = stream.outbox.take_results()
        assert sorted(r.execution_id for r in results) == sorted(
            w.execution_id for w in (first, second, third)
        ), "one result each"
        by_id = {r.execution_id: r.status for r in results}
        assert by_id[first.execution_id] in (SUCCEEDED, CANCELLED)
        assert by_id[second.execution_id] == SUCCEEDED
        assert by_id[third.execution_id] in (SUCCEEDED, CANCELLED)
        assert CANCELLED in by_id.values(), "the cancels were taken"
        _assert_free(engine, stream)

    asyncio.run(main())


def test_a_cancel_is_not_a_shutdown_hand_back() -> None:
    async def main() -> None:
        target = Waiting()
        engine, stream = _engine(target)
        stopped, cut = _item(1), _item(2)
        engine.on_request(stream, ipb.ExecuteRequest(items=[stopped, cut]))
        await asyncio.sleep(0)
        engine.on_request(stream, _cancel(stopped))
        await asyncio.sleep(0)
        await engine.drain(grace=0.01)  # the other is still running: handed back
        by_id = {r.execution_id: r for r in stream.outbox.take_results()}
        assert by_id[stopped.execution_id].status == CANCELLED
        assert not by_id[stopped.execution_id].retryable
        assert by_id[cut.execution_id].status == PENDING
        assert by_id[cut.execution_id].retryable
        _assert_free(engine, stream)

    asyncio.run(main())
