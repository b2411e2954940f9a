"""The executor's core: scheduler streams, the attempts they brought, credits, renewals, and the
way every result reaches a scheduler (its stream, or ReportResults once the stream is gone).

A result sent on a stream is kept (its outbox's `unacked`) until the scheduler acknowledges it on
that stream. When the stream ends, for whatever reason (broken, cancelled, half-closed by the
scheduler, executor draining), its unacknowledged results go to ReportResults with the unsent
ones: a result is only forgotten once some scheduler recorded it (fencing makes the duplicates
that this can produce harmless).

Prefetch: the executor grants credits for `slots` items plus a prefetch. At most `slots` attempts
run at once; the items beyond them wait in a FIFO queue, in `attempts` like running ones, so their
leases are renewed the same way and a stream's results are not final until they have run. When an
attempt ends the oldest queued item starts at once: the next window is already on the executor
instead of one round trip away (lease, send, run, report, record, re-grant). Lag counts the time
queued (start_time is taken when the attempt starts). Draining hands queued items back unrun
(PENDING) before it waits for the running ones.

The prefetch follows the executor's pace: at most what it finished over the last second would
finish in PREFETCH_HORIZON_S (Little's law: the queue then waits about that long), capped by
EXECUTOR_PREFETCH. An executor whose attempts are slow or stuck prefetches nothing, so work due
meanwhile waits in Redis for whichever executor frees a slot, not behind a busy one.

Cancels (ExecuteRequest.cancels, on any stream): an attempt held under that execution id and
token is stopped and reported CANCELLED on its own stream, like any result. A queued one is
dropped at once (never started); a running one gets its reason set and its task cancelled: the
target stops (an http call is aborted; a command's process group gets SIGTERM, then SIGKILL if
it outlives 1 s) and the runner reports CANCELLED when the task ends, which frees the slot. The
one result comes from the task ending (whatever made it end, the cancel or the attempt's own
end), so an attempt that ends as the cancel arrives reports once. A cancel for an attempt not
held (ended already, another executor's, an older token) is ignored. An attempt being stopped
is no longer renewed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from schedcore import metrics
from schedcore.ipb import ExecuteRequest, LeaseRenewal, WorkItem, WorkResult, executor_pb2
from schedcore.server import cancel_and_wait
from services.executor.flow import Credits, RecentRate
from services.executor.outbox import MAX_RESULTS, Outbox
from services.executor.reporter import Reporter
from services.executor.runner import Runner

log = logging.getLogger("executor.core")

# Longest wait, at shutdown, for attempts to return once cancelled, and for streams to flush.
CANCEL_WAIT_S = 5.0
FLUSH_WAIT_S = 2.0
# The longest a prefetched item should wait for a slot at the executor's recent pace.
PREFETCH_HORIZON_S = 0.1
# Bounds of one stream's results sent and not acknowledged (acks normally come within ms): this
# many times the slots (at least one full message), and no older than one lease plus the margin.
UNACKED_PER_SLOT = 10
UNACKED_MARGIN_S = 30.0


@dataclass(eq=False)
class Stream:
    """One scheduler's Execute call."""

    name: str
    outbox: Outbox
    alive: bool = True
    # The scheduler sends no more items; the call ends once its attempts have ended.
    half_closed: bool = False
    running: int = 0


@dataclass(eq=False)
class Attempt:
    item: WorkItem
    stream: Stream
    task: asyncio.Task[None] | None = field(default=None)
    # Its task has begun (a task cancelled before that never runs its code).
    started: bool = False
    # Set once the scheduler cancelled it (CancelAttempt): why, for its CANCELLED result.
    cancel_reason: str | None = None


class Engine:
    def __init__(
        self,
        slots: int,
        lease_s: float,
        executor_id: str,
        runner: Runner,
        reporter: Reporter,
        prefetch: int = 0,
    ) -> None:
        self.lease_s = lease_s
        self.executor_id = executor_id
        self.runner = runner
        self.reporter = reporter
        self.slots = slots
        self.prefetch = prefetch
        self.finished = RecentRate()
        # Credits cover items accepted: running plus queued (capacity set by _regrant).
        self.credits: Credits[Stream] = Credits(slots)
        self.streams: list[Stream] = []
        # Every accepted item, running (its task set) or queued (task None, also in `queued`).
        self.attempts: dict[tuple[str, int], Attempt] = {}
        self.queued: deque[tuple[tuple[str, int], Attempt]] = deque()
        self.active = 0
        self.draining = False
        self.max_unacked = max(UNACKED_PER_SLOT * slots, MAX_RESULTS)
        self.max_unacked_age_s = lease_s + UNACKED_MARGIN_S
        self._background: list[asyncio.Task[None]] = []
        self._sending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if not self._background:
            self._background = [
                asyncio.create_task(self.reporter.run(), name="reporter"),
                asyncio.create_task(self._renew_forever(), name="renewals"),
            ]

    # Streams.

    def open_stream(self, name: str) -> Stream:
        outbox = Outbox(
            self.executor_id, max_unacked=self.max_unacked, max_unacked_age_s=self.max_unacked_age_s
        )
        outbox.scheduler = name
        stream = Stream(name, outbox)
        self.streams.append(stream)
        self.credits.open(stream)
        if self.draining:
            stream.outbox.close()
        return stream

    def on_request(self, stream: Stream, request: ExecuteRequest) -> None:
        if request.scheduler_id:
            stream.name = stream.outbox.scheduler = request.scheduler_id
        if request.acks:
            stream.outbox.ack(request.acks)
        freed = self._cancel(request.cancels) if request.cancels else False
        if (request.acks or request.cancels) and not (request.items or request.release or request.demand):
            if freed:  # a cancelled queued item's credit is free again
                self._regrant()
            return  # acks, cancels alone: the demand last reported still holds (it is not zeroed)
        items = list(request.items)
        covered = 0 if self.draining else self.credits.take(stream, len(items))
        for item in items[:covered]:
            self._start(item, stream)
        if len(items) > covered:
            why = (
                "executor shutting down: item handed back unrun"
                if self.draining
                else f"no credit: {len(items) - covered} of {len(items)} items exceeded the credits held; "
                "handed back unrun"
            )
            log.warning(why, extra={"scheduler": stream.name})
            for item in items[covered:]:
                stream.outbox.add_result(self.runner.hand_back(item, why))
        self.credits.release(stream, request.release)
        self.credits.set_demand(stream, request.demand)
        self._regrant()

    def half_close(self, stream: Stream) -> None:
        stream.half_closed = True
        self.credits.close(stream)
        self._regrant()
        if stream.running == 0:
            stream.outbox.close()

    def close_stream(self, stream: Stream) -> None:
        """The call is over: results sent and not acknowledged, unsent ones, and those of
        attempts still running, go by ReportResults."""
        if stream.alive:
            stream.alive = False
            self.streams.remove(stream)
            self.credits.close(stream)
            stream.outbox.close()
            self.reporter.add(stream.outbox.take_results())
            self._regrant()

    def prefetch_now(self) -> int:
        """Items to accept beyond the slots: what the recent pace finishes in the horizon."""
        if not self.prefetch:
            return 0
        pace = self.finished.per_second(time.monotonic())
        return min(self.prefetch, int(pace * PREFETCH_HORIZON_S))

    def _regrant(self) -> None:
        self.credits.slots = self.slots + self.prefetch_now()
        if self.streams:
            self.streams.append(self.streams.pop(0))
        for stream, count in self.credits.allocate(list(self.streams)).items():
            stream.outbox.add_grant(count)

    # Attempts.

    def _start(self, item: WorkItem, stream: Stream) -> None:
        key = (item.execution_id, item.lease_token)
        if key in self.attempts:
            log.warning("duplicate item ignored: already running", extra={"execution_id": item.execution_id})
            self.credits.finish()
            return
        attempt = Attempt(item, stream)
        stream.running += 1
        self.attempts[key] = attempt
        if self.active < self.slots:
            self._launch(key, attempt)
        else:
            self.queued.append((key, attempt))
            metrics.ATTEMPTS_QUEUED.set(len(self.queued))

    def _launch(self, key: tuple[str, int], attempt: Attempt) -> None:
        """Start an attempt in a free slot: an inline target's at once, to its end (the caller
        regrants), any other's in a task of its own."""
        result = self.runner.run_inline(attempt.item)
        if result is not None:
            self.finished.add(time.monotonic())
            self._forget(key, attempt)
            self._deliver(attempt.stream, result)
            return
        self.active += 1
        attempt.task = asyncio.create_task(
            self._attempt(key, attempt), name=f"attempt {attempt.item.execution_id}"
        )

    def _next(self) -> None:
        """A slot freed: start the oldest queued item still accepted."""
        while self.queued and self.active < self.slots and not self.draining:
            key, attempt = self.queued.popleft()
            if self.attempts.get(key) is attempt:
                self._launch(key, attempt)
        metrics.ATTEMPTS_QUEUED.set(len(self.queued))

    def _cancel(self, cancels: Iterable[executor_pb2.CancelAttempt]) -> bool:
        """Stop the attempts named (module docstring, "Cancels"); others are ignored. Returns
        whether a queued item was dropped (its credit is free now)."""
        freed = False
        for cancel in cancels:
            key = (cancel.execution_id, cancel.lease_token)
            attempt = self.attempts.get(key)
            if attempt is None or attempt.cancel_reason is not None:
                continue  # not held (ended already, or never here), or being stopped already
            attempt.cancel_reason = cancel.reason
            log.info(
                "attempt cancelled by the scheduler",
                extra={"execution_id": cancel.execution_id, "running": attempt.task is not None},
            )
            if attempt.task is None:  # queued: never starts
                self.queued.remove((key, attempt))
                metrics.ATTEMPTS_QUEUED.set(len(self.queued))
                self._forget(key, attempt)
                self._deliver(attempt.stream, self.runner.cancelled(attempt.item, cancel.reason))
                freed = True
            elif attempt.started:
                attempt.task.cancel()
            # else its task has not begun yet: it sees the reason first thing (_attempt)
        return freed

    async def _attempt(self, key: tuple[str, int], attempt: Attempt) -> None:
        attempt.started = True
        try:
            if attempt.cancel_reason is not None:  # cancelled before its task began: never run
                result = self.runner.cancelled(attempt.item, attempt.cancel_reason)
            else:
                result = await self.runner.run(attempt.item, lambda: attempt.cancel_reason)
        finally:
            self.active -= 1
            self.finished.add(time.monotonic())
            self._forget(key, attempt)
            self._next()
        self._deliver(attempt.stream, result)
        self._regrant()

    def _forget(self, key: tuple[str, int], attempt: Attempt) -> bool:
        if self.attempts.get(key) is not attempt:
            return False
        del self.attempts[key]
        self.credits.finish()
        attempt.stream.running -= 1
        return True

    def _deliver(self, stream: Stream, result: WorkResult) -> None:
        if stream.alive:
            stream.outbox.add_result(result)
            if stream.half_closed and stream.running == 0:
                stream.outbox.close()
        else:
            self.reporter.add([result])

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            orphans: list[LeaseRenewal] = []
            for attempt in self.attempts.values():
                if attempt.cancel_reason is not None:
                    continue  # being stopped: its result comes shortly (or its lease runs out)
                renewal = LeaseRenewal(
                    execution_id=attempt.item.execution_id, lease_token=attempt.item.lease_token
                )
                if attempt.stream.alive:
                    attempt.stream.outbox.add_renewal(renewal)
                else:
                    orphans.append(renewal)
            if orphans:
                task = asyncio.create_task(self.reporter.renew(orphans), name="orphan renewals")
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
            for stream in self.streams:  # acks that never came: bounded by age too
                stream.outbox.prune()

    # Shutdown.

    async def drain(self, grace: float) -> None:
        """Stop granting and taking items; let attempts run for `grace` seconds, cancel the rest
        (they are handed back as PENDING), flush and end every stream."""
        self.draining = True
        self.credits.stop()
        while self.queued:  # never started: back at once, not after the grace
            key, attempt = self.queued.popleft()
            if self._forget(key, attempt):
                why = "executor shutting down: queued item handed back unrun"
                self._deliver(attempt.stream, self.runner.hand_back(attempt.item, why))
        metrics.ATTEMPTS_QUEUED.set(0)
        tasks = {a.task for a in self.attempts.values() if a.task is not None}
        if tasks:
            log.info("waiting for running attempts", extra={"count": len(tasks), "grace_s": grace})
            _, late = await asyncio.wait(tasks, timeout=grace)
            if late:
                log.warning("handing back attempts still running", extra={"count": len(late)})
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=CANCEL_WAIT_S)
        for key, attempt in list(self.attempts.items()):  # cancelled before it started, or stuck
            if self._forget(key, attempt):
                why = "executor shutting down: attempt did not end when cancelled"
                self._deliver(attempt.stream, self.runner.hand_back(attempt.item, why))
        for stream in self.streams:
            stream.outbox.close()
        for _ in range(int(FLUSH_WAIT_S / 0.01)):
            if not self.streams:
                break
            await asyncio.sleep(0.01)

    async def close(self, flush_s: float) -> None:
        """After the server stopped: deliver what the reporter holds, then stop everything."""
        if not await self.reporter.flush(flush_s):
            log.error("results still undelivered at exit")
        for task in [*self._background, *self._sending]:
            await cancel_and_wait(task)
        await self.reporter.close()
