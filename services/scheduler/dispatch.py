"""The dispatch loop: lease ready executions within the credits executors granted, and push them
in batches; hand back credits an idle scheduler holds; take back expired leases."""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from schedcore import ipb, metrics
from schedcore.channels import ChannelSecurity
from schedcore.redisconn import REDIS_UNAVAILABLE
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.engine import DispatchItem
from services.scheduler.links import Link, Links
from services.scheduler.results import Recorder

log = logging.getLogger("scheduler.dispatch")

# An execution whose lease expires more often than this (its executor died each time) ends FAILED.
MAX_LOSSES = 5
# Credits held this long with nothing to send go back to the executor for other schedulers.
RELEASE_AFTER_S = 1.0
# Standing demand: after its backlog is sent, a replica keeps announcing as demand what it
# dispatched over the last STANDING_WINDOW_S (its share per link, at most BATCH_SIZE). Periodic
# work (every-second cron tasks) then finds credits waiting when the next occurrences are
# committed, instead of announcing demand only then and waiting a demand -> grant round trip
# (docs/benchmarks.md, "Where the time goes"). Credits are still only a permission to send: this
# changes no lease or record, and credits a replica holds unused go back as before, once the
# window has no dispatch in it and RELEASE_AFTER_S has passed.
STANDING_WINDOW_S = 1.5


def work_item(item: DispatchItem) -> ipb.WorkItem:
    assert item.spec is not None
    record, spec = item.execution, item.spec
    work = ipb.WorkItem(
        execution_id=record.id,
        task_id=record.task_id,
        lease_token=item.token,
        attempt=record.attempt,
        task_name=spec.name,
    )
    work.target.CopyFrom(spec.target)
    work.payload.CopyFrom(record.payload)
    work.timeout.CopyFrom(spec.timeout)
    work.nominal_time.CopyFrom(record.nominal_time)
    return work


class Dispatcher:
    def __init__(self, store: Store, settings: Settings, recorder: Recorder) -> None:
        self.store = store
        self.settings = settings
        self.recorder = recorder
        self.lease_ms = int(settings.lease_s * 1000)
        self.wake = asyncio.Event()
        security = ChannelSecurity.from_settings(settings)
        self.links = Links(settings.executor_addrs, settings.instance_id, self.on_response, security)
        self.dispatched = 0
        self.stopping = False  # set by the drain: the round under way ends, no other starts
        self._recent: collections.deque[tuple[float, int]] = collections.deque()  # (when, items)
        self._recent_total = 0

    def _standing(self, sent: int, links: int) -> int:
        """Each link's standing demand: its share of what was dispatched in the recent window."""
        now = time.monotonic()
        if sent:
            self._recent.append((now, sent))
            self._recent_total += sent
        while self._recent and self._recent[0][0] < now - STANDING_WINDOW_S:
            self._recent_total -= self._recent.popleft()[1]
        if not links or self.stopping:
            return 0
        return min(-(-self._recent_total // links), self.settings.batch_size)

    def poke(self) -> None:
        self.wake.set()

    async def on_response(self, link: Link, response: ipb.ExecuteResponse) -> None:
        if response.grant:
            self.poke()
        while True:
            try:
                if response.results:
                    await self.recorder.record(response.results, link.sent)
                    for r in response.results:
                        link.sent.pop(r.execution_id, None)
                    # Recorded (or found stale): the executor may forget them. Until this ack it
                    # keeps them, and resends them to another replica if this one dies.
                    acks = [
                        ipb.ResultAck(execution_id=r.execution_id, lease_token=r.lease_token)
                        for r in response.results
                    ]
                    link.send(
                        ipb.ExecuteRequest(acks=acks, demand=max(link.last_demand, 0))
                    )  # demand is absolute
                if response.renewals:
                    await self.recorder.renew(response.renewals)
                return
            except REDIS_UNAVAILABLE as exc:
                metrics.REDIS_ERRORS.labels("results").inc()
                # Not recorded yet: keep trying; if Redis stays away longer than the lease, the
                # execution is reclaimed and run again (at-least-once, with its idempotency key).
                log.warning("cannot record results from %s yet: %s", link.addr, exc)
                await asyncio.sleep(0.5)

    async def dispatch_once(self) -> int:
        links = self.links.connected()
        now, due, _ = await self.store.engine.peek(
            self.store.keys.ready, lex=False, limit=self.settings.batch_size
        )
        demand = len(due)
        credits = sum(link.credits for link in links)
        items: list[DispatchItem] = []
        if demand and credits:
            items = await self.store.engine.lease_ready(min(credits, demand), self.lease_ms, due)
            metrics.LEASES_TAKEN.inc(len(items))
            orphans = [(i.execution, i.token) for i in items if i.spec is None]
            if orphans:
                await self.recorder.cancel_orphans(orphans, now)
            items = [i for i in items if i.spec is not None]
        # Each executor hears its share of what is left, so one scheduler does not gather every
        # executor's credits for the same backlog while other replicas starve.
        remaining = max(0, demand - len(items))
        standing = self._standing(len(items), len(links))
        share = max(-(-remaining // len(links)) if links else 0, standing)
        for link in sorted(links, key=lambda x: -x.credits):
            if not link.connected:  # dropped while we leased: its share goes back below
                continue
            batch, items = items[: link.credits], items[link.credits :]
            if batch:
                link.credits -= len(batch)
                link.sent.update((i.execution.id, i) for i in batch)
                link.send(ipb.ExecuteRequest(items=[work_item(i) for i in batch], demand=share))
                link.last_demand = share
                self.dispatched += len(batch)
                metrics.DISPATCH_BATCH.observe(len(batch))
            elif share > link.last_demand or (share == 0 and link.last_demand != 0):
                # A falling standing demand is not worth a message per round; zero is.
                link.send(ipb.ExecuteRequest(demand=share))
                link.last_demand = share
            self._release_if_idle(link, share)
        if items:  # leased, but no stream could take them: back to ready, no attempt or loss counted
            await self.recorder.hand_back([(i.execution, i.token) for i in items], now)
        return demand

    def _release_if_idle(self, link: Link, demand: int) -> None:
        if demand or not link.credits:
            link.idle_since = None
            return
        now = time.monotonic()
        if link.idle_since is None:
            link.idle_since = now
        elif now - link.idle_since > RELEASE_AFTER_S:
            link.send(ipb.ExecuteRequest(release=link.credits, demand=0))
            link.credits = 0
            link.idle_since = None

    async def run(self) -> None:
        while not self.stopping:
            self.wake.clear()
            try:
                demand = await self.dispatch_once()
            except REDIS_UNAVAILABLE as exc:
                metrics.REDIS_ERRORS.labels("dispatch").inc()
                log.warning("dispatch paused: Redis unavailable (%s)", exc)
                await asyncio.sleep(0.5)
                continue
            except Exception:
                log.exception("dispatch round failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if demand and any(link.credits for link in self.links.connected()):
                continue
            try:
                async with asyncio.timeout(self.settings.poll_interval_s):
                    await self.wake.wait()
            except TimeoutError:
                pass

    async def reclaim_forever(self) -> None:
        """Executions whose lease expired (dead executor or scheduler) go back to ready."""
        while True:
            try:
                queued, failed = await self.store.engine.reclaim(
                    self.settings.batch_size, MAX_LOSSES, self.lease_ms
                )
                metrics.LEASES_RECLAIMED.labels("requeued").inc(len(queued))
                metrics.LEASES_RECLAIMED.labels("failed").inc(len(failed))
                if failed:
                    reason = f"failed: lost its executor {MAX_LOSSES + 1} times (did the target crash it?)"
                    await self.recorder.fail_lost(failed, await self.store.now_ms(), reason)
                    log.error("%d executions failed after losing their executor too often", len(failed))
                if queued:
                    log.warning("reclaimed %d executions whose lease expired", len(queued))
                    self.poke()
                if queued or failed:
                    continue
            except REDIS_UNAVAILABLE:
                metrics.REDIS_ERRORS.labels("reclaim").inc()
            except Exception:
                log.exception("reclaim round failed; retrying")
            await asyncio.sleep(max(0.1, self.settings.lease_s / 4))
