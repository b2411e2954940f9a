"""Small helpers for the service loops: one guarded round of work, and a bounded wait.

No redis import here: the executor uses these too and stays free of redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from schedcore import metrics
from schedcore.errors import StoreUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRY_S = 0.5  # pause after a failed round before the next one


async def guarded_round(
    label: str, round_: Callable[[], Awaitable[T]], *, warn: bool = True
) -> tuple[bool, T | None]:
    """Run one round of a loop that must outlive failures: (True, result) when it worked;
    (False, None) when the store was unavailable (counted in REDIS_ERRORS under ``label``,
    logged when ``warn``) or the round failed otherwise (logged with its traceback)."""
    try:
        return True, await round_()
    except StoreUnavailable as exc:
        metrics.REDIS_ERRORS.labels(label).inc()
        if warn:
            log.warning("%s paused: Redis unavailable (%s)", label, exc.reason)
    except Exception:  # e.g. Redis out of memory: keep trying, loudly
        log.exception("%s round failed; retrying", label)
    return False, None


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set; True when it was, False when ``timeout_s`` ran out."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
