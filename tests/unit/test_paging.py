"""The paging helper (services/api/paging.py): pages bounded in bytes resume at the item that did
not fit, skipping nothing, also across filtered-out rows and chunk boundaries."""

from __future__ import annotations

import asyncio
import random

from google.protobuf.wrappers_pb2 import StringValue

from services.api.paging import TOKEN_ALLOWANCE, collect, encoded_size

BUDGET = 10_000


def index(n: int, seed: int = 7) -> list[tuple[str, StringValue]]:
    rng = random.Random(seed)
    rows = [(f"{i:06d}", StringValue(value="x" * rng.choice((10, 900, 3000, 12_000)))) for i in range(n)]
    return rows


def walk(rows: list[tuple[str, StringValue]], size: int, wanted) -> list[list[StringValue]]:  # type: ignore[no-untyped-def]
    async def fetch(after: str | None, count: int) -> list[tuple[str, StringValue | None]]:
        later = [r for r in rows if after is None or r[0] > after]
        return list(later[:count])

    pages: list[list[StringValue]] = []
    cursor: str | None = None
    while True:
        page, cursor = asyncio.run(collect(fetch, cursor, size, wanted, lambda v: v, BUDGET))
        pages.append(page)
        if cursor is None:
            return pages


def test_every_matching_item_once_and_pages_within_the_budget() -> None:
    rows = index(700)

    def wanted(v: StringValue) -> bool:
        return len(v.value) != 900  # some rows are filtered out

    pages = walk(rows, 50, wanted)
    got = [v for page in pages for v in page]
    assert got == [v for _, v in rows if wanted(v)]
    for page in pages:
        cost = TOKEN_ALLOWANCE + sum(encoded_size(v) for v in page)
        assert len(page) == 1 or cost <= BUDGET, cost
        assert len(page) <= 50


def test_an_item_larger_than_the_budget_comes_alone() -> None:
    rows = [(f"{i}", StringValue(value="y" * (BUDGET if i == 1 else 10))) for i in range(3)]
    pages = walk(rows, 50, lambda v: True)
    assert [len(p) for p in pages] == [1, 1, 1]


# --- page: the whole List sequence (filters -> page token -> collect -> next_page_token) ---


def test_page_walks_with_signed_tokens_bound_to_the_filters() -> None:
    import pytest

    from schedcore.errors import InvalidArgument
    from services.api.pagetoken import PageTokens
    from services.api.paging import page

    rows = [(f"{i:06d}", StringValue(value=str(i))) for i in range(25)]

    async def fetch(after: str | None, count: int) -> list[tuple[str, StringValue | None]]:
        return [r for r in rows if after is None or r[0] > after][:count]

    tokens = PageTokens(b"k" * 32, 3600)

    def one(token: str, filters: list[object]) -> tuple[list[StringValue], str]:
        return asyncio.run(
            page(tokens, token, filters, fetch, 10, lambda v: True, lambda v: v, BUDGET, valid=str.isdigit)
        )

    seen: list[str] = []
    token = ""
    while True:
        items, token = one(token, ["demo", 1])
        seen += [v.value for v in items]
        if not token:
            break
    assert seen == [str(i) for i in range(25)]
    _, token = one("", ["demo", 1])
    with pytest.raises(InvalidArgument, match="page_token: does not match this request's filters"):
        one(token, ["demo", 2])
    forged = tokens.encode('["demo", 1]', "not-a-key")
    with pytest.raises(InvalidArgument, match="page_token: invalid: not a token this service issued"):
        one(forged, ["demo", 1])
