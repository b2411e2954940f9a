"""The scheduler's alert loop (docs/alerts.md): sweep the late-start and running-long checks,
then deliver due notifications, in the partitions this replica works.

Each round leases due notifications (a new token and one more attempt each), sends them at most
ALERT_CONCURRENCY at once, and records every outcome under its token. A replica killed mid-send
leaves its notifications leased; when the lease runs out another replica sends them again, with
the same id (at least once: the receiver drops a repeat by webhook-id or Message-ID).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from schedcore import metrics, pb
from schedcore.alerting import Alert, Sender
from schedcore.loops import guarded_round, wait_event
from schedcore.sealing import Sealer, SealError, unseal_channel
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.alerts import DELIVERED, GIVE_UP, RETRY, AlertStore, Leased, Outcome, due_partitions

log = logging.getLogger("scheduler.alerts")

BATCH = 50  # notifications leased per partition per round
POLL_S = 0.5  # between rounds that found nothing to send
SWEEP_LIMIT = 1000  # watch entries one sweep call looks at
FIRST_BACKOFF_MS = 5_000
MAX_BACKOFF_MS = 3_600_000


def backoff_ms(attempt: int) -> int:
    """Delay before the attempt after `attempt` (1-based): 5 s, doubling, at most 1 h."""
    return int(min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** min(attempt - 1, 20)))


class AlertLoop:
    def __init__(self, store: Store, settings: Settings, sender: Sender, owns: Callable[[int], bool]) -> None:
        self.store = store
        self.settings = settings
        self.sender = sender
        self.owns = owns
        self.slots = asyncio.Semaphore(settings.alert_concurrency)
        self.sealer = Sealer(settings.secret_keys)
        # Longer than a send may take, so a live deliverer's lease does not run out under it.
        self.lease_ms = int((3 * settings.alert_timeout_s + 5) * 1000)
        self.retention_s = settings.notification_retention_days * 86_400
        self.stopping = asyncio.Event()
        self._next_sweep = 0.0

    async def channels(self, ids: Sequence[str]) -> dict[str, pb.Channel | str | None]:
        """Each channel with its secrets in the clear; None when it is gone, or why it cannot be
        opened (a key missing from SECRET_KEYS)."""
        out: dict[str, pb.Channel | str | None] = {}
        for channel_id, stored in zip(ids, await self.store.channels.get_many(ids), strict=True):
            try:
                out[channel_id] = None if stored is None else unseal_channel(stored, self.sealer)
            except SealError as exc:
                out[channel_id] = f"cannot open the channel's secrets: {exc}"
        return out

    async def run(self) -> None:
        while not self.stopping.is_set():
            ok, busy = await guarded_round("alerts", self.round)
            if not (ok and busy):
                await wait_event(self.stopping, POLL_S)

    async def round(self) -> bool:
        """One sweep (when due) and one delivery round; whether a batch came back full."""
        owned = [p for p in range(len(self.store.alerts)) if self.owns(p)]
        sweep = time.monotonic() >= self._next_sweep
        if sweep:
            self._next_sweep = time.monotonic() + self.settings.alert_sweep_s
        notify, watch = await due_partitions(self.store.redis, self.store.alerts, owned, sweep)
        for p in watch:
            _, raised = await self.store.alerts[p].sweep(SWEEP_LIMIT)
            metrics.ALERTS_SWEPT.inc(raised)
        busy = False
        for p in notify:
            alerts = self.store.alerts[p]
            leased = await alerts.lease(BATCH, self.lease_ms)
            if leased:
                await self.deliver(alerts, leased)
                busy |= len(leased) == BATCH
        return busy

    async def deliver(self, alerts: AlertStore, leased: Sequence[Leased]) -> None:
        task_ids = list(dict.fromkeys(n.task_id for n in leased))
        names = {
            task_id: stored.spec.name if stored is not None else ""
            for task_id, stored in zip(task_ids, await self.store.tasks.get_many(task_ids), strict=True)
        }
        channels = await self.channels(list(dict.fromkeys(n.channel_id for n in leased)))
        outcomes = await asyncio.gather(
            *(self._one(n, names[n.task_id], channels[n.channel_id]) for n in leased)
        )
        await alerts.done(outcomes, self.retention_s, self.settings.alert_max_attempts)

    async def _one(self, n: Leased, task_name: str, channel: pb.Channel | str | None) -> Outcome:
        if channel is None:
            return self._counted("deleted", Outcome(n.id, n.token, GIVE_UP, "channel deleted"))
        if isinstance(channel, str):  # its secrets cannot be opened: another try may, after a fix
            return self._counted("sealed", Outcome(n.id, n.token, RETRY, channel, backoff_ms(n.attempt)))
        kind = channel.WhichOneof("kind") or "unknown"
        if channel.namespace != n.namespace:
            why = f"channel {channel.id} is in namespace {channel.namespace}, the task in {n.namespace}"
            return self._counted(kind, Outcome(n.id, n.token, GIVE_UP, why))
        alert = Alert(n.id, n.kind, n.task_id, task_name, n.namespace, n.execution_id, n.message, n.raised_ms)
        async with self.slots:
            sent = await self.sender.send(channel, alert)
        if sent.ok:
            return self._counted(kind, Outcome(n.id, n.token, DELIVERED))
        last = n.attempt >= self.settings.alert_max_attempts
        log.warning(
            "notification %s to channel %s: attempt %d failed: %s%s",
            n.id,
            channel.id,
            n.attempt,
            sent.error,
            "" if sent.retryable and not last else "; giving up",
        )
        if not sent.retryable:
            return self._counted(kind, Outcome(n.id, n.token, GIVE_UP, sent.error))
        return self._counted(kind, Outcome(n.id, n.token, RETRY, sent.error, backoff_ms(n.attempt)), last)

    def _counted(self, kind: str, outcome: Outcome, last: bool = False) -> Outcome:
        label = {DELIVERED: "delivered", GIVE_UP: "failed"}.get(
            outcome.result, "failed" if last else "retried"
        )
        metrics.NOTIFICATION_ATTEMPTS.labels(kind, label).inc()
        return outcome
