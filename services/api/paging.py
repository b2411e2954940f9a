"""The one paging module of every List RPC (ListTasks, ListExecutions, ListAuditEvents,
ListTokens). `page` is the whole sequence: the request's filters bind its page token (a token
issued for other filters is refused), the token's cursor is checked, `collect` walks the index,
and the key it stopped at becomes next_page_token. `collect` is a keyset walk over an index,
bounded three ways.

- items: the request's page_size;
- index entries examined: SCAN_BUDGET (a selective filter returns a short page, not a slow one);
- bytes: LIST_PAGE_MAX_BYTES of the serialized response. A page stops before the item that would
  pass it and resumes at that item, so nothing is skipped; an item larger than the budget on its
  own is sent alone (it fits the server's send limit: the request that stored it did).

A short page says nothing about the end: only an empty next_page_token does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from schedcore.errors import InvalidArgument
from services.api.pagetoken import PageTokens

# How many index entries one List call may examine before it returns a (possibly short) page.
SCAN_BUDGET = 5000
# Bytes of a page kept for its next_page_token (a signed token takes about 150).
TOKEN_ALLOWANCE = 512

T = TypeVar("T")
M = TypeVar("M", bound=Message)


def encoded_size(message: Message) -> int:
    """What a message costs as one element of a repeated field: tag, length, body."""
    size = message.ByteSize()
    return 1 + _varint_size(size) + size


def _varint_size(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


async def collect(
    fetch: Callable[[str | None, int], Awaitable[list[tuple[str, T | None]]]],
    cursor: str | None,
    size: int,
    matches: Callable[[T], bool],
    render: Callable[[T], M],
    max_bytes: int,
) -> tuple[list[M], str | None]:
    """Walk an index from `cursor`, collecting the messages `render` makes of up to `size`
    matching items. Returns them and the key to resume from (None: the end)."""
    page: list[M] = []
    used = TOKEN_ALLOWANCE
    last = cursor
    scanned = 0
    chunk = min(max(size * 2, 100), 1000)
    while scanned < SCAN_BUDGET:
        rows = await fetch(last, chunk)
        for key, item in rows:
            before, last = last, key
            scanned += 1
            if item is None or not matches(item):
                continue
            message = render(item)
            cost = encoded_size(message)
            if page and used + cost > max_bytes:
                return page, before  # the next page starts at this item
            page.append(message)
            used += cost
            if len(page) == size:
                return page, last
        if len(rows) < chunk:
            return page, None
    return page, last


async def page(
    tokens: PageTokens,
    page_token: str,
    filters: Sequence[object],
    fetch: Callable[[str | None, int], Awaitable[list[tuple[str, T | None]]]],
    size: int,
    matches: Callable[[T], bool],
    render: Callable[[T], M],
    max_bytes: int,
    valid: Callable[[str], object] | None = None,
) -> tuple[list[M], str]:
    """One page of a List RPC and its next_page_token ("" at the end). `filters` are what the
    request selects by (a JSON list); `valid` checks a decoded cursor's shape (falsy: refused
    as a token this service did not issue; it may raise its own InvalidArgument)."""
    bound = json.dumps(filters)
    cursor = tokens.decode(page_token, bound)
    if cursor is not None and valid is not None and not valid(cursor):
        raise InvalidArgument.field("page_token", "invalid: not a token this service issued")
    items, last = await collect(fetch, cursor, size, matches, render, max_bytes)
    return items, tokens.encode(bound, last) if last is not None else ""
