"""The backlog gauges: what waits in each partition, read from Redis every few seconds.

`tasksched_executions_ready`, `_in_flight` and `_waiting_command` carry a `partition` label and
are reported by one replica per partition (Ownership.reports), so `sum` over replicas counts each
partition once. A replica that stops reporting a partition (another took it over) removes that
partition's series at its next round: no stale value lingers beside the new reporter's.
A round is one pipelined read (three ZCARDs per partition reported); a failed one is counted in
tasksched_redis_errors_total{operation="backlog"} and leaves the last values in place."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from schedcore import metrics
from schedcore.loops import guarded_round, wait_event
from schedcore.store.stats import StatsStore

# How often the gauges are read: well under a scrape interval (15-60 s), a few commands a round.
BACKLOG_INTERVAL_S = 5.0
GAUGES = (metrics.EXECUTIONS_READY, metrics.EXECUTIONS_IN_FLIGHT, metrics.EXECUTIONS_WAITING_COMMAND)


class BacklogGauges:
    def __init__(
        self,
        stats: StatsStore,
        count: int,
        reports: Callable[[int], bool],
        interval_s: float = BACKLOG_INTERVAL_S,
    ) -> None:
        self.stats = stats
        self.count = count
        self.reports = reports
        self.interval_s = interval_s
        self.shown: set[int] = set()  # partitions whose series this replica exposes
        self.stopping = asyncio.Event()

    async def observe(self) -> None:
        """One round: drop the series of partitions no longer reported, read and set the rest."""
        mine = [p for p in range(self.count) if self.reports(p)]
        for p in self.shown.difference(mine):
            for gauge in GAUGES:
                gauge.remove(str(p))
        self.shown.intersection_update(mine)
        if not mine:
            return
        for p, backlog in (await self.stats.backlog(mine)).items():
            label = str(p)
            metrics.EXECUTIONS_READY.labels(label).set(backlog.ready)
            metrics.EXECUTIONS_IN_FLIGHT.labels(label).set(backlog.in_flight)
            metrics.EXECUTIONS_WAITING_COMMAND.labels(label).set(backlog.waiting_command)
            self.shown.add(p)

    async def run(self) -> None:
        while not self.stopping.is_set():
            await guarded_round("backlog", self.observe)
            await wait_event(self.stopping, self.interval_s)
