"""Assembles the scheduler service: firing, dispatch, reclaim, backlog gauges, and SchedulerService.

One firing loop per partition ("firing-<p>"), one dispatch loop and one reclaim loop over them
all; with PARTITIONS above 1 each works only the partitions this replica owns now (ownership.py,
docs/partitions.md, "Schedulers share partitions"), with one every replica works it."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from schedcore import ipb
from schedcore.alerting import Sender
from schedcore.channels import ChannelSecurity
from schedcore.redisconn import connect
from schedcore.server import GrpcService, cancel_and_wait
from schedcore.settings import Settings
from schedcore.store import Store
from services.scheduler.alerts import AlertLoop
from services.scheduler.backlog import BacklogGauges
from services.scheduler.dispatch import Dispatcher
from services.scheduler.firing import Firer
from services.scheduler.links import Links
from services.scheduler.ownership import Ownership
from services.scheduler.results import Recorder
from services.scheduler.servicer import SchedulerService

# At shutdown, how long a firing or dispatch round under way may take to end.
ROUND_WAIT_S = 3.0


async def build(settings: Settings) -> GrpcService:
    redis = connect(settings)
    store = Store(redis, settings.redis_key_prefix, settings.partitions)
    recorder = Recorder(store, settings)
    security = ChannelSecurity.from_settings(settings)
    links = Links(settings.executor_addrs, settings.instance_id, security, settings.standby_credits)
    dispatcher = Dispatcher(store, settings, recorder, links)
    firers = [Firer(engine, settings, dispatcher) for engine in store.engines]
    ownership = Ownership(
        store.ownership, settings.partitions, settings.instance_id, settings.partition_lease_s
    )
    dispatcher.owns = ownership.owns
    for p, firer in enumerate(firers):
        firer.owns = functools.partial(ownership.owns, p)
    sender = Sender(settings)
    alert_loop = AlertLoop(store, settings, sender, ownership.owns)
    backlog = BacklogGauges(store.stats, settings.partitions, ownership.reports)
    tasks: dict[str, asyncio.Task[None]] = {}

    def register(server: Any) -> list[str]:
        ipb.scheduler_grpc.add_SchedulerServiceServicer_to_server(SchedulerService(recorder), server)
        return [ipb.scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name]

    async def once_checked(loop: Callable[[], Awaitable[None]]) -> None:
        """Run `loop` once Redis was found to hold data in this many partitions (Store.ready):
        with another count the process stops before writing anything."""
        await store.layout_checked.wait()
        await loop()

    async def start() -> None:
        await links.refresh()
        for name, loop in (
            ("ownership", ownership.run),
            *((f"firing-{p}", firer.run) for p, firer in enumerate(firers)),
            ("dispatch", dispatcher.run),
            ("reclaim", dispatcher.reclaim_forever),
            ("discovery", links.run),
            ("capabilities", dispatcher.publish_capabilities_forever),
            ("alerts", alert_loop.run),
            ("backlog", backlog.run),
        ):
            tasks[name] = asyncio.create_task(once_checked(loop), name=name)

    async def drain(grace: float) -> None:
        """SIGTERM: finish the firing and dispatch rounds under way and start no other, then
        half-close the executor streams: every item leased is delivered (nothing waits for its
        lease to expire), and results keep being recorded until the executors end the streams."""
        if not tasks:
            return
        for firer in firers:
            firer.stopping = True
        dispatcher.stopping = True
        dispatcher.poke()
        alert_loop.stopping.set()  # the sends under way end and are recorded, or their lease runs out
        await cancel_and_wait(tasks["discovery"])  # the set of streams stays as it is
        loops = [tasks[f"firing-{p}"] for p in range(len(firers))] + [tasks["dispatch"], tasks["alerts"]]
        await asyncio.wait(loops, timeout=min(grace, ROUND_WAIT_S))
        for task in loops:
            await cancel_and_wait(task)
        await cancel_and_wait(tasks["ownership"])
        await ownership.leave()  # the others take this replica's partitions on at their next beat
        await links.drain(grace)

    async def close() -> None:
        alert_loop.stopping.set()
        for task in tasks.values():
            await cancel_and_wait(task)
        links.close()
        await sender.aclose()
        await redis.aclose()

    return GrpcService("scheduler", settings, register, store.ready, close, on_start=start, drain=drain)
