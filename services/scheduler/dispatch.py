"""The dispatch loop: lease ready executions within the credits executors granted, and push them
in batches; hand back credits an idle scheduler holds; take back expired leases.

Every partition's queues are worked by every replica (docs/partitions.md, "Schedulers share
partitions"): a round peeks each partition's `ready`, shares the credits among the partitions
with work (partitioned.fair_split) and leases from each in its own script; reclaim takes back
every partition's expired leases. With one partition a round makes the calls it always made."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from schedcore import ipb, metrics, pb
from schedcore.errors import StoreUnavailable
from schedcore.loops import RETRY_S, guarded_round, wait_event
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.engine import DispatchItem, EngineStore, FireCommit, Fired
from services.scheduler.links import Link, Links
from services.scheduler.partitioned import each, fair_split, per_partition
from services.scheduler.results import Recorder
from services.scheduler.routing import route

log = logging.getLogger("scheduler.dispatch")

# The target kind only some executors run (EXECUTOR_COMMAND_TARGETS=true), and how often a
# scheduler linked to such an executor vouches for it in Redis; the api believes a vouch for
# CAPABILITY_TTL_S (about three refreshes), so a dead scheduler's vouch soon lapses.
COMMAND = "command"
CAPABILITY_REFRESH_S = 3.0
CAPABILITY_TTL_S = 10.0


def runs_command(spec: pb.Task) -> bool:
    return spec.target.HasField("command")


PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING
RUNNING = pb.ExecutionStatus.EXECUTION_STATUS_RUNNING


def is_command(item: DispatchItem) -> bool:
    return item.spec is not None and runs_command(item.spec)


@dataclass(frozen=True)
class _Leased:
    """One round's lease: Redis time, how many were due in each ready queue, the command
    executors' credits, and the leased items (the first `from_command_queue` from the command queue)."""

    now: int
    due: int
    due_command: int
    command_credits: int
    items: list[DispatchItem]
    from_command_queue: int
    claimed: int  # credits claimed for the lease: the caller unclaims them as it pushes


class Dispatcher:
    def __init__(self, store: Store, settings: Settings, recorder: Recorder, links: Links) -> None:
        self.store = store
        self.settings = settings
        self.recorder = recorder
        self.lease_ms = int(settings.lease_s * 1000)
        self.wake = asyncio.Event()
        self.links = links
        links.subscribe(self.on_response)
        self.dispatched = 0
        self.stopping = False  # set by the drain: the round under way ends, no other starts
        self.capabilities_seen = asyncio.Event()
        # Credits a lease under way (a dispatch round's, a firing round's) will use: the other
        # round leases only what is left (docs/engine.md, "Leased as it fires").
        self.claimed = 0
        self.turn = 0  # which partition an uneven share of credits favours this round (rotates)
        # When the soonest ready entry not due yet comes due (a retry's backoff, a jittered
        # start), as of the last lease's Redis time: an idle round sleeps no longer than that.
        self.next_ready: tuple[int, int] | None = None  # (its ms, the lease's now)
        # Whether this replica works partition p now (services/scheduler/ownership.py).
        self.owns: Callable[[int], bool] = lambda partition: True

    def poke(self) -> None:
        self.wake.set()

    async def on_response(self, link: Link, response: ipb.ExecuteResponse) -> None:
        if response.grant:
            self.poke()
        if response.capabilities:
            self.capabilities_seen.set()
            self.poke()
        while True:
            try:
                if response.results:
                    await self.recorder.record(response.results, link.sent)
                    link.acknowledge(response.results)
                if response.renewals:
                    renewed = await self.recorder.renew(response.renewals)
                    link.cancel(renewed.cancels)
                return
            except StoreUnavailable as exc:
                metrics.REDIS_ERRORS.labels("results").inc()
                # Not recorded yet: keep trying; if Redis stays away longer than the lease, the
                # execution is reclaimed and run again (at-least-once, with its idempotency key).
                log.warning("cannot record results from %s yet: %s", link.addr, exc.reason)
                await asyncio.sleep(0.5)

    def _free(self, links: list[Link]) -> int:
        return max(0, sum(link.credits for link in links) - self.claimed)

    def claim_for_fire(self, commits: list[FireCommit]) -> list[bool]:
        """Which commits of a firing round lease their run as they fire: in order, as many as the
        credits no round has claimed, never a command run (those take the ready path and its
        routing) nor one that waits for its planned start (jitter: it waits in ready). The
        claim holds until `unclaim`, which the firing round calls once its commit returned,
        before it awaits anything else."""
        free = 0 if self.stopping else self._free(self.links.connected())
        flags = []
        for c in commits:
            take = free > 0 and bool(c.records) and c.records[0].status == PENDING
            take = take and not c.waits and not runs_command(c.task.spec)
            flags.append(take)
            free -= take
        self.claimed += sum(flags)
        return flags

    def unclaim(self, flags: list[bool]) -> None:
        self.claimed -= sum(flags)

    async def deliver_fired(self, commits: list[FireCommit], fired: list[Fired]) -> None:
        """Push the runs a firing round leased as it fired (fire_commit.lua, token 1)."""
        items = []
        for c, f in zip(commits, fired, strict=True):
            if f.leased:
                run = c.records[0]
                run.status = RUNNING
                items.append(DispatchItem(run, 1, c.task.spec))
        if items:
            metrics.LEASES_TAKEN.labels("fire").inc(len(items))
            await self._deliver(self.links.connected(), items, None)

    async def dispatch_once(self) -> int:
        """One round. Returns the demand it could act on: executions due in the ready queue, and
        those in the command ready queue when a linked command executor holds credits."""
        links = self.links.connected()
        capable = [link for link in links if COMMAND in link.capabilities]
        leased = await self._lease(links, capable)
        metrics.LEASES_TAKEN.labels("ready").inc(len(leased.items))
        # Each executor hears its share of what is left, so one scheduler does not gather every
        # executor's credits for the same backlog while other replicas starve.
        # Command executions count only towards the demand of links that run them.
        remaining = max(0, leased.due - (len(leased.items) - leased.from_command_queue))
        remaining_command = max(0, leased.due_command - leased.from_command_queue)
        share = -(-remaining // len(links)) if links else 0
        share_command = -(-remaining_command // len(capable)) if capable else 0
        runnable = [i for i in leased.items if i.spec is not None]
        self.claimed -= leased.claimed
        await self._deliver(links, runnable, (share, share_command))
        orphans = [(i.execution, i.token) for i in leased.items if i.spec is None]
        if orphans:
            await self.recorder.cancel_orphans(orphans, leased.now)
        return leased.due + (leased.due_command if leased.command_credits else 0)

    async def _deliver(
        self, links: list[Link], items: list[DispatchItem], shares: tuple[int, int] | None
    ) -> None:
        """Route leased items (routing.py) and push them, each link told its share of the demand
        (`shares`: of the ready queue, of the command queue; None: what it was told last).
        Pushes before any await; what no stream takes goes back."""
        capable = [link for link in links if COMMAND in link.capabilities]
        routes = route(items, {link: link.credits for link in links}, capable, is_command)
        unsent: list[DispatchItem] = []
        for link in sorted(links, key=lambda x: -x.credits):
            batch = routes.batches[link]
            if not link.connected:  # dropped while we leased: its share goes back below
                unsent += batch
                continue
            if shares is None:
                demand = max(link.last_demand, 0)
            else:
                demand = shares[0] + (shares[1] if COMMAND in link.capabilities else 0)
            link.push(batch, demand)
            if batch:
                self.dispatched += len(batch)
                metrics.DISPATCH_BATCH.observe(len(batch))
        now = await self.store.now_ms() if routes.park or routes.back or unsent else 0
        park = routes.park + [i for i in unsent if is_command(i)]
        back = routes.back + [i for i in unsent if not is_command(i)]
        if park:  # no credit on a link that runs them: set aside, PENDING, no attempt counted
            leases = [(i.execution.id, i.token) for i in park]
            await per_partition(
                self.store, [i for i, _ in leases], lambda e, at: e.park([leases[i] for i in at])
            )
        if back:  # leased, but no stream could take them: back to ready, no attempt or loss counted
            await self.recorder.hand_back([(i.execution, i.token) for i in back], now)

    async def _lease(self, links: list[Link], capable: list[Link]) -> _Leased:
        """Lease what the links' credits allow: command executions first (only links that run
        them hold credits for those), then the ready queues; each kind's credits shared fairly
        among the partitions that have such work, each partition leased in its own script."""
        engines = self.worked()
        if not engines:
            return _Leased(await self.store.now_ms(), 0, 0, 0, [], 0, 0)
        size = self.settings.batch_size
        peeks = await each([e.peek(e.keys.ready, lex=False, limit=size) for e in engines])
        now = max(peek[0] for peek in peeks)
        due = [ids for _, ids, _ in peeks]
        later = [ms for _, _, ms in peeks if ms is not None]
        self.next_ready = (min(later), now) if later else None
        due_command: list[list[str]] = [[] for _ in engines]
        if capable:  # only a replica that can run them looks at the command executions set aside
            peeks = await each([e.peek(e.keys.ready_command, lex=False, limit=size) for e in engines])
            due_command = [ids for _, ids, _ in peeks]
        credits = self._free(links)
        command_credits = min(credits, sum(link.credits for link in capable))
        start = self.turn = (self.turn + 1) % len(engines)
        command_shares = fair_split(command_credits, [len(ids) for ids in due_command], start)
        due_count = sum(len(ids) for ids in due)
        claimed = min(credits, sum(command_shares) + due_count)
        self.claimed += claimed
        items: list[DispatchItem] = []
        try:
            items = await self._lease_each(engines, command_shares, due_command, command=True)
            from_command_queue = len(items)
            shares = fair_split(credits - len(items), [len(ids) for ids in due], start)
            items += await self._lease_each(engines, shares, due, command=False)
        except BaseException:
            self.claimed -= claimed
            raise
        due_command_count = sum(len(ids) for ids in due_command)
        return _Leased(now, due_count, due_command_count, command_credits, items, from_command_queue, claimed)

    def worked(self) -> Sequence[EngineStore]:
        """The partitions this replica leases from and reclaims: those it owns now (every one
        with PARTITIONS=1; safety does not rest on it, docs/partitions.md)."""
        engines = self.store.engines
        if len(engines) == 1:
            return engines
        return [engine for p, engine in enumerate(engines) if self.owns(p)]

    async def _lease_each(
        self, engines: Sequence[EngineStore], shares: list[int], candidates: list[list[str]], *, command: bool
    ) -> list[DispatchItem]:
        """Lease `shares[i]` of `candidates[i]` from `engines[i]` (from its command ready queue
        when `command`), one script per partition with a share, the partitions in order.

        When some partitions' scripts fail and others lease, what was leased is returned to be
        pushed (raising would leave it in `inflight` until its lease expired, counted as a loss);
        only when every one fails is the first failure raised."""
        calls = [
            e.lease_ready(n, self.lease_ms, ids, queue=e.keys.ready_command if command else "")
            for e, n, ids in zip(engines, shares, candidates, strict=True)
            if n
        ]
        if len(calls) <= 1:
            return [item for got in await each(calls) for item in got]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed and len(failed) == len(outcomes):
            raise failed[0]
        for failure in failed:
            metrics.REDIS_ERRORS.labels("dispatch").inc()
            log.warning("a partition's lease failed; the others' go out (%s)", failure)
        return [item for got in outcomes if not isinstance(got, BaseException) for item in got]

    async def publish_capabilities_forever(self) -> None:
        """While a linked executor runs command targets, say so in Redis (the api refuses
        command tasks when nobody does); at once when an executor announces it, then every
        CAPABILITY_REFRESH_S."""
        ttl_ms = int(CAPABILITY_TTL_S * 1000)
        while True:
            kinds = sorted({k for link in self.links.connected() for k in link.capabilities})
            try:
                await self.store.engine.publish_capabilities(kinds, ttl_ms)  # global: partition 0
            except StoreUnavailable:
                metrics.REDIS_ERRORS.labels("capabilities").inc()
            except Exception:
                log.exception("cannot publish executor capabilities; retrying")
            self.capabilities_seen.clear()
            await wait_event(self.capabilities_seen, CAPABILITY_REFRESH_S)

    async def run(self) -> None:
        while not self.stopping:
            self.wake.clear()
            ok, demand = await guarded_round("dispatch", self.dispatch_once)
            if not ok:
                await asyncio.sleep(RETRY_S)
                continue
            if demand and any(link.credits for link in self.links.connected()):
                continue
            wait = self.settings.poll_interval_s
            if self.next_ready is not None:
                at, now = self.next_ready
                wait = min(wait, max(0.0, (at - now) / 1000))
            await wait_event(self.wake, wait)

    async def reclaim_forever(self) -> None:
        """Executions whose lease expired (dead executor or scheduler) go back to ready."""
        while True:
            _, busy = await guarded_round("reclaim", self._reclaim_once, warn=False)
            if not busy:
                await asyncio.sleep(max(0.1, self.settings.lease_s / 4))

    async def _reclaim_once(self) -> bool:
        """One reclaim round over every partition; True when it found expired leases (so another
        round follows)."""
        size = self.settings.batch_size
        losses = self.settings.max_deliveries - 1  # reclaimed this often; the next loss fails it
        rounds = await each([e.reclaim(size, losses, self.lease_ms) for e in self.worked()])
        queued = [i for r in rounds for i in r.queued]
        failed = [lease for r in rounds for lease in r.failed]
        cancelled = [lease for r in rounds for lease in r.cancelled]
        metrics.LEASES_RECLAIMED.labels("requeued").inc(len(queued))
        metrics.LEASES_RECLAIMED.labels("failed").inc(len(failed))
        metrics.LEASES_RECLAIMED.labels("cancelled").inc(len(cancelled))
        if cancelled:
            await self.recorder.end_cancelled(cancelled, await self.store.now_ms())
        if failed:
            reason = f"failed: lost its executor {losses + 1} times (did the target crash it?)"
            await self.recorder.fail_lost(failed, await self.store.now_ms(), reason)
            log.error("%d executions failed after losing their executor too often", len(failed))
        if queued:
            log.warning("reclaimed %d executions whose lease expired", len(queued))
            self.poke()
        return bool(queued or failed or cancelled)
