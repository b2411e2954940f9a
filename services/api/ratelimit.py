"""Per-token request rate limit: a token bucket per token on each api replica (API_RATE_LIMIT
requests per second, API_RATE_BURST saved up). Per replica, not shared through Redis: a call costs
no round trip, and a client spread over N replicas gets up to N times the rate (docs/security.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from schedcore.errors import ResourceExhausted

# Buckets one replica keeps; past it, the full ones (idle tokens) are forgotten.
MAX_BUCKETS = 10_000


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate  # 0: no limit
        self.burst = burst
        self.clock = clock
        # token id -> (tokens left, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def _left(self, token_id: str, now: float) -> float:
        tokens, then = self._buckets.get(token_id, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - then) * self.rate)

    def take(self, token_id: str, name: str) -> None:
        """Spend one request of the token's bucket, or raise ResourceExhausted (nothing spent)."""
        if self.rate <= 0:
            return
        now = self.clock()
        left = self._left(token_id, now)
        if left < 1:
            wait = math.ceil((1 - left) / self.rate * 1000) / 1000
            raise ResourceExhausted(
                f"rate limit exceeded: token {name!r} may make {self.rate:g} requests per second on "
                f"each api replica, {self.burst} at once (API_RATE_LIMIT, API_RATE_BURST); retry in "
                f"{wait:g} s"
            )
        if token_id not in self._buckets and len(self._buckets) >= MAX_BUCKETS:
            self._forget_full(now)
        self._buckets[token_id] = (left - 1, now)

    def _forget_full(self, now: float) -> None:
        full = [t for t in self._buckets if self._left(t, now) >= self.burst]
        for token_id in full or list(self._buckets):
            del self._buckets[token_id]
