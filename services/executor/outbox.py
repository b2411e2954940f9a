"""What one stream has to say to its scheduler, batched: grants, results and renewals go out
together, at most one message per linger period (a few ms), or at once when enough results
wait. Never one message per item under load."""

from __future__ import annotations

import asyncio

from schedcore.ipb import ExecuteResponse, LeaseRenewal, WorkResult

# How long the first pending entry waits for company before the message goes out.
LINGER_S = 0.005
# A message goes out without lingering once this many results wait; also the most it carries.
MAX_RESULTS = 500
# Rough bound of one message (the server's limit is 8 MiB).
MAX_BYTES = 4 * 1024 * 1024


def _size(result: WorkResult) -> int:
    return len(result.result.output) * 4 + len(result.status_message) * 4 + 256


class Outbox:
    def __init__(self, executor_id: str, linger_s: float = LINGER_S) -> None:
        self.executor_id = executor_id
        self.linger_s = linger_s
        self.grant = 0
        self.results: list[WorkResult] = []
        self.renewals: list[LeaseRenewal] = []
        self.closed = False
        self._wake = asyncio.Event()
        self._full = asyncio.Event()

    @property
    def pending(self) -> bool:
        return bool(self.grant or self.results or self.renewals)

    def add_grant(self, count: int) -> None:
        self.grant += count
        self._wake.set()

    def add_result(self, result: WorkResult) -> None:
        self.results.append(result)
        self._wake.set()
        if len(self.results) >= MAX_RESULTS:
            self._full.set()

    def add_renewal(self, renewal: LeaseRenewal) -> None:
        self.renewals.append(renewal)
        self._wake.set()

    def close(self) -> None:
        """Send what is pending, then end."""
        self.closed = True
        self._wake.set()
        self._full.set()

    def take_results(self) -> list[WorkResult]:
        """The results not sent yet (the stream is gone: they go another way)."""
        results, self.results = self.results, []
        return results

    async def next(self) -> ExecuteResponse | None:
        """The next message to send, or None once closed and empty."""
        while not self.pending:
            if self.closed:
                return None
            self._wake.clear()
            await self._wake.wait()
        if not self.closed and len(self.results) < MAX_RESULTS:
            self._full.clear()
            try:
                async with asyncio.timeout(self.linger_s):
                    await self._full.wait()
            except TimeoutError:
                pass
        return self._build()

    def _build(self) -> ExecuteResponse:
        budget = MAX_BYTES
        count = 0
        for result in self.results[:MAX_RESULTS]:
            budget -= _size(result)
            if budget < 0 and count:
                break
            count += 1
        results = self.results[:count]
        ended = {(r.execution_id, r.lease_token) for r in results}
        message = ExecuteResponse(
            grant=self.grant,
            results=results,
            # A renewal queued just before its attempt ended is moot.
            renewals=[r for r in self.renewals if (r.execution_id, r.lease_token) not in ended],
            executor_id=self.executor_id,
        )
        self.grant = 0
        del self.results[:count]
        self.renewals = []
        if self.results:
            self._wake.set()
        return message
