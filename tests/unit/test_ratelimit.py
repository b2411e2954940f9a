"""The per-token token bucket of services/api/ratelimit.py, on a clock the test moves."""

from __future__ import annotations

import pytest

from schedcore.errors import ResourceExhausted
from services.api import ratelimit
from services.api.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate_and_each_token_on_its_own() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("a", "alice")
    with pytest.raises(ResourceExhausted) as info:
        limiter.take("a", "alice")
    assert "'alice'" in str(info.value) and "retry in 0.5 s" in str(info.value)
    limiter.take("b", "bob")  # another token has its own bucket
    clock.now += 0.5  # one request's worth at 2 per second
    limiter.take("a", "alice")
    with pytest.raises(ResourceExhausted):
        limiter.take("a", "alice")
    clock.now += 60  # refills only up to the burst
    for _ in range(3):
        limiter.take("a", "alice")
    with pytest.raises(ResourceExhausted):
        limiter.take("a", "alice")


def test_a_refused_request_spends_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    limiter.take("a", "a")
    for _ in range(5):
        with pytest.raises(ResourceExhausted):
            limiter.take("a", "a")
    clock.now += 1.0
    limiter.take("a", "a")


def test_rate_zero_means_no_limit() -> None:
    limiter = RateLimiter(rate=0, burst=1, clock=Clock())
    for _ in range(1000):
        limiter.take("a", "a")


def test_buckets_are_bounded_forgetting_idle_tokens_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_BUCKETS", 3)
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock)
    limiter.take("busy", "busy")
    limiter.take("busy", "busy")
    limiter.take("idle-1", "x")
    limiter.take("idle-2", "x")
    clock.now += 1.0  # the idle ones are full again; busy has 1 of 2
    limiter.take("new", "x")
    assert set(limiter._buckets) == {"busy", "new"}
    limiter.take("busy", "busy")
    with pytest.raises(ResourceExhausted):
        limiter.take("busy", "busy")  # forgetting the idle ones did not refill it
