import asyncio

from schedcore.errors import StoreUnavailable
from schedcore.loops import guarded_round, wait_event


def test_wait_event_returns_true_when_set() -> None:
    async def main() -> bool:
        event = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, event.set)
        return await wait_event(event, 5.0)

    assert asyncio.run(main()) is True


def test_wait_event_returns_false_on_timeout() -> None:
    async def main() -> tuple[bool, float]:
        event = asyncio.Event()
        loop = asyncio.get_running_loop()
        start = loop.time()
        got = await wait_event(event, 0.05)
        return got, loop.time() - start

    got, waited = asyncio.run(main())
    assert got is False
    assert 0.04 <= waited < 2.0


def _redis_errors(label: str) -> float:
    from schedcore import metrics

    return metrics.REDIS_ERRORS.labels(label)._value.get()


def test_guarded_round_returns_the_result() -> None:
    async def work() -> int:
        return 7

    assert asyncio.run(guarded_round("unit-ok", work)) == (True, 7)


def test_guarded_round_counts_store_unavailable() -> None:
    async def work() -> int:
        raise StoreUnavailable("ConnectionError: gone")

    before = _redis_errors("unit-down")
    assert asyncio.run(guarded_round("unit-down", work)) == (False, None)
    assert _redis_errors("unit-down") == before + 1


def test_guarded_round_survives_other_errors_without_counting() -> None:
    async def work() -> int:
        raise ValueError("bug")

    before = _redis_errors("unit-bug")
    assert asyncio.run(guarded_round("unit-bug", work)) == (False, None)
    assert _redis_errors("unit-bug") == before
