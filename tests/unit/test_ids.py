"""The one retry when a generated id is taken (services/api/ids.py)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import code_pb2

from schedcore.errors import Aborted, IdTaken, status_of
from services.api.ids import with_fresh_id


def taken_times(n: int, calls: list[int]):  # type: ignore[no-untyped-def]
    """An attempt whose first `n` ids are taken, counting its calls."""

    async def attempt() -> str:
        calls.append(1)
        if len(calls) <= n:
            raise IdTaken("abc")
        return "stored"

    return attempt


def test_retries_until_an_id_is_free() -> None:
    calls: list[int] = []
    assert asyncio.run(with_fresh_id("a task id", taken_times(2, calls), tries=3)) == "stored"
    assert len(calls) == 3


def test_gives_up_with_aborted_naming_the_id() -> None:
    calls: list[int] = []
    with pytest.raises(Aborted, match="could not allocate a token id; retry"):
        asyncio.run(with_fresh_id("a token id", taken_times(99, calls), tries=5))
    assert len(calls) == 5


def test_other_errors_pass_through_at_once() -> None:
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        raise KeyError("x")

    with pytest.raises(KeyError):
        asyncio.run(with_fresh_id("a task id", attempt))
    assert len(calls) == 1


def test_an_id_taken_that_escapes_is_aborted() -> None:
    assert IdTaken("abc").code is grpc.StatusCode.ABORTED
    assert isinstance(IdTaken(3), FileExistsError)
    assert status_of(IdTaken("abc")).code == code_pb2.ABORTED
