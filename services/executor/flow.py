"""Credit accounting: the executor's slots, shared by every scheduler stream.

A slot is either free, granted (a credit a stream holds and has not used yet), or running (an
attempt). Credits go only to streams whose demand exceeds the credits they hold, and never more in
total than the free slots: free = slots - running - outstanding grants. Pure bookkeeping; the
engine calls it and sends what `allocate` hands out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class Account:
    # How many more items the stream could send now (absolute, as last reported).
    demand: int = 0
    # Credits granted to the stream and not used or released yet.
    outstanding: int = 0


class Credits(Generic[K]):
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.running = 0
        self.stopped = False
        self._accounts: dict[K, Account] = {}

    @property
    def outstanding(self) -> int:
        return sum(a.outstanding for a in self._accounts.values())

    @property
    def free(self) -> int:
        return self.slots - self.running - self.outstanding

    def open(self, key: K) -> None:
        self._accounts[key] = Account()

    def close(self, key: K) -> None:
        """The stream sends no more items: its unused credits go back to the pool."""
        self._accounts.pop(key, None)

    def account(self, key: K) -> Account | None:
        return self._accounts.get(key)

    def take(self, key: K, count: int) -> int:
        """`count` items arrived on the stream: returns how many of them its credits cover (those
        start running; the rest must not run)."""
        account = self._accounts.get(key)
        if account is None:
            return 0
        covered = min(count, account.outstanding)
        account.outstanding -= covered
        self.running += covered
        return covered

    def release(self, key: K, count: int) -> None:
        account = self._accounts.get(key)
        if account is not None and count > 0:
            account.outstanding -= min(count, account.outstanding)

    def set_demand(self, key: K, demand: int) -> None:
        account = self._accounts.get(key)
        if account is not None:
            account.demand = max(0, demand)

    def finish(self, count: int = 1) -> None:
        """Attempts that `take` covered have ended (or were never started): their slots are free."""
        self.running = max(0, self.running - count)

    def stop(self) -> None:
        """No credit is granted any more (shutting down)."""
        self.stopped = True

    def allocate(self, order: list[K] | None = None) -> dict[K, int]:
        """Hand out free slots to streams whose demand exceeds their credits, as evenly as the
        needs allow, in `order` (rotate it between calls to spread remainders). Returns the new
        grants, already counted as outstanding."""
        if self.stopped:
            return {}
        keys = order if order is not None else list(self._accounts)
        need = {k: a.demand - a.outstanding for k in keys if (a := self._accounts.get(k)) is not None}
        need = {k: n for k, n in need.items() if n > 0}
        free = self.free
        grants: dict[K, int] = {}
        while free > 0 and need:
            share = max(1, free // len(need))
            for key in list(need):
                give = min(share, need[key], free)
                if give <= 0:
                    break
                grants[key] = grants.get(key, 0) + give
                free -= give
                need[key] -= give
                if need[key] == 0:
                    del need[key]
        for key, count in grants.items():
            self._accounts[key].outstanding += count
        return grants


class RecentRate:
    """Events per second over the last `window_s` seconds, counted in ten buckets."""

    BUCKETS = 10

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._width = window_s / self.BUCKETS
        self._counts: deque[list[int]] = deque()  # [bucket number, events], oldest first

    def add(self, now: float, count: int = 1) -> None:
        bucket = int(now / self._width)
        if self._counts and self._counts[-1][0] == bucket:
            self._counts[-1][1] += count
        else:
            self._counts.append([bucket, count])

    def per_second(self, now: float) -> float:
        oldest = int(now / self._width) - self.BUCKETS
        while self._counts and self._counts[0][0] <= oldest:
            self._counts.popleft()
        return sum(count for _, count in self._counts) / self.window_s
