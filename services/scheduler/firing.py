"""The firing loop: lease due occurrences, plan them, commit them, in batches.

Sleeps until the next occurrence comes due (as the due index says) or POLL_INTERVAL_SECONDS,
whichever is sooner, so an idle task fires within milliseconds of its time without polling hard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from schedcore import metrics
from schedcore.loops import RETRY_S, guarded_round
from schedcore.settings import Settings
from schedcore.store.engine import EngineStore, FireCommit
from services.scheduler.plan import plan

log = logging.getLogger("scheduler.firing")


class Firer:
    def __init__(self, engine: EngineStore, settings: Settings, on_fired: Callable[[], None]) -> None:
        self.engine = engine
        self.settings = settings
        self.on_fired = on_fired
        self.lease_ms = int(settings.lease_s * 1000)
        # A takeover after a dead replica's lease expired is late by up to a lease: that is not
        # the suite being down, so lateness counts as missed only beyond tolerance + lease.
        self.tolerance_ms = int((settings.missed_tolerance_s + settings.lease_s) * 1000)
        self.fired = 0
        self.stopping = False  # set by the drain: the round under way ends, no other starts

    async def fire_once(self) -> tuple[int, float]:
        """Fire one batch. Returns (occurrences leased, seconds until the next is due)."""
        now, leased, later = await self.engine.lease_due(self.settings.batch_size, self.lease_ms)
        if leased:
            commits: list[FireCommit] = []
            started = time.monotonic()
            for task in leased:
                # Planning is CPU work on the event loop: commit what is planned well before the
                # leases expire; the rest come due again when theirs do.
                if time.monotonic() - started > self.settings.lease_s / 3:
                    log.warning("planning took too long; %d tasks wait for their lease to expire",
                                len(leased) - len(commits))  # fmt: skip
                    break
                try:
                    commits.append(plan(task, now, self.tolerance_ms))
                except Exception:
                    log.exception("cannot plan task %s; it is retried when its lease expires", task.task_id)
            fired = await self.engine.commit_fire_counted(commits, now)
            created = sum(f.created for f in fired if f.created > 0)
            queued = sum(f.queued for f in fired)
            self.fired += created
            metrics.OCCURRENCES_FIRED.inc(queued)
            metrics.OCCURRENCES_SKIPPED.inc(created - queued)
            self.on_fired()
        wait = self.settings.poll_interval_s
        if later is not None:
            wait = min(wait, max(0.0, (later - now) / 1000))
        return len(leased), wait

    async def run(self) -> None:
        while not self.stopping:
            ok, got = await guarded_round("firing", self.fire_once)
            if not ok or got is None:
                await asyncio.sleep(RETRY_S)
                continue
            count, wait = got
            if count < self.settings.batch_size:
                await asyncio.sleep(wait)
