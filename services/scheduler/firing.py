"""The firing loop: read due occurrences, plan them, commit them by compare-and-set, in batches.

Sleeps until the next occurrence comes due (as the due index says) or POLL_INTERVAL_SECONDS,
whichever is sooner, so an idle task fires within milliseconds of its time without polling hard.
When executors' credits are waiting, the runs a round creates are leased in its commit and pushed
at once (docs/engine.md, "Leased as it fires").

A Firer works one partition (its EngineStore's): the scheduler runs one per partition, each its
own loop, so a partition with a burst due never holds back the others' rounds, and each sleeps
by its own partition's next due time (docs/partitions.md, "Schedulers share partitions").
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from schedcore import metrics, tracing
from schedcore.loops import RETRY_S, guarded_round
from schedcore.settings import Settings
from schedcore.store.engine import EngineStore, FireCommit, Fired
from services.scheduler.plan import plan

log = logging.getLogger("scheduler.firing")

# A task that cannot be planned (a bug, not bad input: schedules are validated) is set aside this
# long, so it neither spins the loop nor holds back the tasks due behind it.
PLAN_RETRY_MS = 10_000


class Dispatch(Protocol):
    """What firing needs of dispatch (services/scheduler/dispatch.py's Dispatcher)."""

    def poke(self) -> None: ...
    def claim_for_fire(self, commits: list[FireCommit]) -> list[bool]: ...
    def unclaim(self, flags: list[bool]) -> None: ...
    async def deliver_fired(self, commits: list[FireCommit], fired: list[Fired]) -> None: ...


class Firer:
    def __init__(self, engine: EngineStore, settings: Settings, dispatch: Dispatch) -> None:
        self.engine = engine
        self.settings = settings
        self.dispatch = dispatch
        self.lease_ms = int(settings.lease_s * 1000)
        # Nothing is leased while a task fires, so a takeover is not late by a lease.
        self.tolerance_ms = int(settings.missed_tolerance_s * 1000)
        self.spread = 0.0  # after a conflict, the next round reads at a random offset (read_due)
        self.fired = 0
        self.stopping = False  # set by the drain: the round under way ends, no other starts
        # Whether this replica works the engine's partition now (services/scheduler/ownership.py).
        self.owns: Callable[[], bool] = lambda: True

    async def fire_once(self) -> tuple[int, float]:
        """Fire one batch. Returns (occurrences read, seconds until the next is due)."""
        started_ns = time.time_ns()  # the traced runs' fire spans start here
        now, due, later = await self.engine.read_due(self.settings.batch_size, self.spread)
        if due:
            commits: list[FireCommit] = []
            for task in due:
                try:
                    commits.append(plan(task, now, self.tolerance_ms))
                except Exception:
                    log.exception("cannot plan task %s; tried again in %d ms", task.task_id, PLAN_RETRY_MS)
                    commits.append(FireCommit.deferred(task, now + PLAN_RETRY_MS))
            lease = self.dispatch.claim_for_fire(commits)
            try:
                fired = await self.engine.commit_fire(commits, now, lease, self.lease_ms)
            finally:
                self.dispatch.unclaim(lease)
            tracing.fired(commits, fired, started_ns)
            await self.dispatch.deliver_fired(commits, fired)
            created = sum(f.created for f in fired if f.created > 0)
            queued = sum(f.queued for f in fired)
            conflicts = sum(1 for f in fired if f.created < 0)
            self.spread = random.random() if conflicts else 0.0
            self.fired += created
            metrics.OCCURRENCES_FIRED.inc(queued)
            metrics.OCCURRENCES_SKIPPED.inc(created - queued)
            self.dispatch.poke()
        wait = self.settings.poll_interval_s
        if later is not None:
            wait = min(wait, max(0.0, (later - now) / 1000))
        return len(due), wait

    async def run(self) -> None:
        while not self.stopping:
            if not self.owns():  # another replica works this partition: look again shortly
                await asyncio.sleep(self.settings.poll_interval_s)
                continue
            ok, got = await guarded_round("firing", self.fire_once)
            if not ok or got is None:
                await asyncio.sleep(RETRY_S)
                continue
            count, wait = got
            if count < self.settings.batch_size:
                await asyncio.sleep(wait)
