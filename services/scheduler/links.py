"""Streams to executor replicas: one long-lived Execute stream per executor address, reconnecting
by itself, holding the credits that executor granted, and finding executors through DNS (a
Kubernetes headless Service resolves to one address per pod)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import grpc

from schedcore import ipb, tracing
from schedcore.channels import ChannelSecurity, aio_channel
from schedcore.store.engine import DispatchItem

log = logging.getLogger("scheduler.links")

OnResponse = Callable[["Link", ipb.ExecuteResponse], Awaitable[None]]

# Credits held this long with nothing to send go back to the executor for other schedulers.
RELEASE_AFTER_S = 1.0


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


class Link:
    def __init__(
        self,
        addr: str,
        scheduler_id: str,
        on_response: OnResponse,
        security: ChannelSecurity,
        server_name: str = "",
        standby: int = 0,
    ) -> None:
        self.addr = addr
        # Credits kept while nothing waits: asked for as demand, never released for idleness.
        self.standby = standby
        # TLS: the executor's certificate names the host EXECUTOR_ADDRS gave, not the pod's IP.
        self.security, self.server_name = security, server_name
        self.scheduler_id = scheduler_id
        self.on_response = on_response
        self.credits = 0
        self.connected = False
        self.last_demand = -1
        self.idle_since: float | None = None
        # What was sent on this stream and not yet answered, by execution id: the recorder
        # needs no read from Redis for those results. Cleared with the stream.
        self.sent: dict[str, DispatchItem] = {}
        self.closing = False
        # Target kinds the executor runs besides log and http ("command"), from its first message
        # on the current stream; the dispatcher hands it command work only when listed.
        self.capabilities: frozenset[str] = frozenset()
        # None ends the requests: the stream is half-closed once what came before it is sent.
        self._queue: asyncio.Queue[ipb.ExecuteRequest | None] = asyncio.Queue()

    def send(self, request: ipb.ExecuteRequest) -> None:
        self._queue.put_nowait(request)

    def push(self, batch: list[DispatchItem], waiting: int) -> None:
        """Send `batch` (within this stream's credits) and the demand: what still waits for this
        stream, or the standby credits when fewer wait; a demand told before is not repeated.
        Credits beyond the standby held idle too long go back (release)."""
        demand = max(waiting, self.standby)
        if batch:
            self.credits -= len(batch)
            self.sent.update((i.execution.id, i) for i in batch)
            items = [work_item(i) for i in batch]
            tracing.dispatched(batch, items, self.addr)
            self.send(ipb.ExecuteRequest(items=items, demand=demand))
            self.last_demand = demand
        elif self.last_demand != demand:
            self.send(ipb.ExecuteRequest(demand=demand))
            self.last_demand = demand
        self._release_if_idle(waiting)

    def acknowledge(self, results: Sequence[ipb.WorkResult]) -> None:
        """Results recorded (or found stale): forget what was sent for them, and tell the executor
        it may forget them too. Until this ack it keeps them, and resends them to another replica
        if this one dies."""
        for r in results:
            self.sent.pop(r.execution_id, None)
        acks = [ipb.ResultAck(execution_id=r.execution_id, lease_token=r.lease_token) for r in results]
        self.send(ipb.ExecuteRequest(acks=acks, demand=max(self.last_demand, 0)))  # demand is absolute

    def cancel(self, cancels: Sequence[tuple[str, int, str]]) -> None:
        """Tell the executor to stop these attempts ((execution id, lease token, reason)), those
        sent on this stream (another stream's are not its executor's). Asked again at each renewal
        until the attempt ends: the executor ignores what it no longer holds."""
        stops = [
            ipb.CancelAttempt(execution_id=i, lease_token=t, reason=r)
            for i, t, r in cancels
            if (item := self.sent.get(i)) is not None and item.token == t
        ]
        if stops:
            self.send(ipb.ExecuteRequest(cancels=stops, demand=max(self.last_demand, 0)))

    def _release_if_idle(self, waiting: int) -> None:
        if waiting or self.credits <= self.standby:
            self.idle_since = None
            return
        now = time.monotonic()
        if self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since > RELEASE_AFTER_S:
            self.send(ipb.ExecuteRequest(release=self.credits - self.standby, demand=self.standby))
            self.credits = self.standby
            self.idle_since = None

    def half_close(self) -> None:
        """Send no more: the items queued still go, then the executor runs what it has and ends
        the call (results it could not send on it go through ReportResults to another replica)."""
        self.closing = True
        self._queue.put_nowait(None)

    async def _requests(self) -> AsyncIterator[ipb.ExecuteRequest]:
        yield ipb.ExecuteRequest(scheduler_id=self.scheduler_id)
        while (request := await self._queue.get()) is not None:
            yield request

    async def run(self) -> None:
        backoff = 0.05
        while not self.closing:
            self._queue = asyncio.Queue()
            self.credits, self.last_demand = 0, -1
            self.sent = {}
            self.capabilities = frozenset()
            try:
                async with aio_channel(self.addr, self.security, server_name=self.server_name) as channel:
                    stub = ipb.executor_grpc.ExecutorServiceStub(channel)
                    call = stub.Execute(self._requests())
                    self.connected = True
                    async for response in call:
                        backoff = 0.05
                        self.credits += response.grant
                        if response.capabilities:
                            self.capabilities = frozenset(response.capabilities)
                        await self.on_response(self, response)
            except grpc.aio.AioRpcError as exc:
                log.info("stream to executor %s ended: %s", self.addr, exc.code().name)
            except Exception:  # e.g. recording failed: reconnect, never give up on an executor
                log.exception("stream to executor %s failed", self.addr)
            finally:
                self.connected = False
                self.credits = 0
                self.sent = {}
                self.capabilities = frozenset()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


def parse_targets(spec: str) -> list[tuple[str, int]]:
    """EXECUTOR_ADDRS: "host:port[,host:port...]", each optionally prefixed with dns:///."""
    targets = []
    for entry in spec.split(","):
        entry = entry.strip().removeprefix("dns:///")
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        targets.append((host.strip("[]"), int(port)))
    return targets


async def resolve(host: str, port: int) -> set[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except socket.gaierror:
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return set()
    out = set()
    for family, *_, address in infos:
        ip = address[0]
        out.add(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
    return out


class Links:
    """The set of executor streams, kept in step with what EXECUTOR_ADDRS resolves to. Each
    executor's messages go to the handler `subscribe` set (the dispatcher's)."""

    def __init__(self, spec: str, scheduler_id: str, security: ChannelSecurity, standby: int = 0) -> None:
        self.targets = parse_targets(spec)
        self.standby = standby
        self.security = security
        self.scheduler_id = scheduler_id
        self.on_response: OnResponse | None = None
        self.links: dict[str, Link] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def subscribe(self, on_response: OnResponse) -> None:
        """Where executors' messages go; before the first refresh, once."""
        assert self.on_response is None and not self.links, "one handler, set before streams open"
        self.on_response = on_response

    def connected(self) -> list[Link]:
        return [link for link in self.links.values() if link.connected]

    async def refresh(self) -> None:
        found: dict[str, str] = {}  # address: the host name it was found under
        for host, port in self.targets:
            found.update(dict.fromkeys(await resolve(host, port), host))
        assert self.on_response is not None, "subscribe() first"
        for addr in found.keys() - self.links.keys():
            link = Link(addr, self.scheduler_id, self.on_response, self.security, found[addr], self.standby)
            self.links[addr] = link
            self._tasks[addr] = asyncio.create_task(link.run(), name=f"link {addr}")
            log.info("executor %s added", addr)
        for addr in self.links.keys() - found:
            self._tasks.pop(addr).cancel()
            del self.links[addr]
            log.info("executor %s gone from DNS", addr)

    async def run(self, interval_s: float = 5.0) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s)

    async def drain(self, within_s: float) -> None:
        """Half-close every stream and wait (at most `within_s`) until the executors end them."""
        for link in self.links.values():
            link.half_close()
        if self._tasks:
            await asyncio.wait(self._tasks.values(), timeout=within_s)

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
