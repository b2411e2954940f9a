"""Retention by age: a periodic sweep of execution history older than HISTORY_MAX_AGE_SECONDS.

Retention by count is applied where executions are written. Every replica may sweep: deleting
what is already deleted is a no-op, so no coordination is needed.
"""

from __future__ import annotations

import asyncio
import logging

from schedcore.loops import guarded_round
from schedcore.settings import Settings
from schedcore.store import Store

log = logging.getLogger("api.retention")

SWEEP_INTERVAL_S = 60.0
BATCH = 500


async def sweep_once(store: Store, max_age_s: int) -> int:
    cutoff = await store.now_ms() - max_age_s * 1000
    return await store.executions.trim_older_than(cutoff, BATCH)


async def sweep_forever(store: Store, settings: Settings) -> None:
    while True:
        # An outage is counted, not logged: health reports it; try again next round.
        _, deleted = await guarded_round(
            "retention", lambda: sweep_once(store, settings.history_max_age_s), warn=False
        )
        if deleted:
            log.info("retention removed %d executions", deleted)
        await asyncio.sleep(SWEEP_INTERVAL_S)
