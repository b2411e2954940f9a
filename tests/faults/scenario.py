"""What the scenarios share: timing helpers and the stated bounds."""

from __future__ import annotations

import time

import pytest

from tests.faults.cluster import BASE_ENV
from tests.faults.scale import current

LEASE_S = float(BASE_ENV["LEASE_SECONDS"])
# Stated slack on top of the lease (and the target's own duration) for an execution to reach a
# terminal state: the machine has 2 shared cores, and a burst of occurrences queues a little.
SLACK_S = 10.0
# Per-scenario pytest timeout: the long form runs for minutes.
TIMEOUT = pytest.mark.timeout(150 if current().name == "short" else 1200)


def now_ms() -> int:
    """Wall clock of this machine: Redis runs on it too, so it reads the same as Redis' TIME."""
    return time.time_ns() // 1_000_000


def sleep_until(ms: int) -> None:
    delay = (ms - now_ms()) / 1000
    if delay > 0:
        time.sleep(delay)


def at_fraction(start_ms: int, end_ms: int, fraction: float) -> int:
    return start_ms + int((end_ms - start_ms) * fraction)
