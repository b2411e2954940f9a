"""ListAuditEvents over several partitions (docs/partitions.md, "Audit"): each partition has its own
stream, and the api lists them as one trail, newest first, sorted by (entry id, partition), with
a cursor naming both. Entries are written straight into each partition's stream (XADD, in the
field format of schedcore/store/audit.py), with chosen ids: equal ids in several partitions,
several in one millisecond, partitions left empty for a while."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
import redis

from schedcore import pb
from schedcore.store.keys import Partitions
from services.api.app import build as build_api
from services.api.pagetoken import PageTokens
from tests.conftest import api_settings
from tests.integration.helpers import invalid, ts_ms
from tests.support import RedisServer, ServiceThread

P = 3
PARTS = Partitions(count=P)
SECRET = "audit-partitions-test-secret"
A = pb.AuditAction
BASE = 1_700_000_000_000

Event = tuple[int, int, int]  # (ms, seq, partition): where it sorts


@pytest.fixture()
def audit(redis_srv: RedisServer, rds: redis.Redis) -> Iterator[pb.audit_service_grpc.AuditServiceStub]:
    service = ServiceThread(build_api, api_settings(redis_srv.url, partitions=P, page_token_secret=SECRET))
    try:
        with grpc.insecure_channel(service.target) as channel:
            yield pb.audit_service_grpc.AuditServiceStub(channel)
    finally:
        service.stop()


def xadd(rds: redis.Redis, ms: int, seq: int, partition: int, namespace: str = "default") -> Event:
    fields = {
        "a": str(A.AUDIT_ACTION_CREATE_TASK),
        "ns": namespace,
        "task": f"{ms % 1_000_000:010d}{seq:04d}{partition:02d}",
        "rid": f"{ms}/{seq}/{partition}",
    }
    rds.xadd(PARTS.all[partition].audit, fields, id=f"{ms}-{seq}")  # type: ignore[arg-type]
    return ms, seq, partition


def expected_id(event: Event) -> str:
    ms, seq, partition = event
    return f"{ms}-{seq}" if partition == 0 else f"{ms}-{seq}-{partition}"


def walk(stub, **filters: object) -> list[list[pb.AuditEvent]]:  # type: ignore[no-untyped-def]
    pages: list[list[pb.AuditEvent]] = []
    token = ""
    while True:
        page = stub.ListAuditEvents(pb.ListAuditEventsRequest(page_token=token, **filters))
        pages.append(list(page.events))
        token = page.next_page_token
        if not token:
            return pages
        assert len(pages) < 500, "the walk does not end: a cursor repeats events"


def flat(pages: list[list[pb.AuditEvent]]) -> list[pb.AuditEvent]:
    return [e for page in pages for e in page]


def trail(rds: redis.Redis) -> list[Event]:
    """A trail over three partitions: equal ids in all three, in two, runs of one partition,
    several sequence numbers in one millisecond, and an empty stretch in each partition."""
    events: list[Event] = []
    for i in range(40):
        ms = BASE + i * 10
        if i % 5 == 0:  # the same entry id in every partition
            events += [xadd(rds, ms, 0, p) for p in range(P)]
        elif i % 5 == 1:  # the same id in partitions 1 and 2 only
            events += [xadd(rds, ms, 3, 1), xadd(rds, ms, 3, 2)]
        elif i % 5 == 2:  # several sequence numbers in one millisecond, in one partition
            events += [xadd(rds, ms, seq, i % P) for seq in range(4)]
        elif i < 20:  # a run of partition 2 only
            events.append(xadd(rds, ms, 1, 2))
        else:  # a run of partition 0 only
            events.append(xadd(rds, ms, 1, 0))
    return sorted(events, reverse=True)


def test_the_trail_is_newest_first_across_partitions_with_no_duplicate_or_gap(
    audit, rds: redis.Redis
) -> None:
    events = trail(rds)
    assert {p for _, _, p in events} == set(range(P))
    want = [expected_id(e) for e in events]
    for size in (1, 2, 3, 7, 1000):
        pages = walk(audit, page_size=size)
        got = flat(pages)
        assert [e.id for e in got] == want, size
        assert all(len(page) <= size for page in pages)
        assert len({e.id for e in got}) == len(got)
    # Each event's fields come from its own partition's entry, and its time from its entry id.
    for event, wanted in zip(flat(walk(audit)), events, strict=True):
        ms, seq, partition = wanted
        assert event.request_id == f"{ms}/{seq}/{partition}"
        assert event.time.ToMilliseconds() == ms
        assert event.action == A.AUDIT_ACTION_CREATE_TASK


def test_every_event_id_resumes_a_page_at_the_next_event(audit, rds: redis.Redis) -> None:
    """page_size=1: every event, of every partition, is once the cursor of a page token."""
    events = trail(rds)
    pages = walk(audit, page_size=1)
    assert [e.id for page in pages for e in page] == [expected_id(e) for e in events]
    cursors = {page[0].id for page in pages[:-1] if page}
    assert any(c.endswith("-1") for c in cursors) and any(c.endswith("-2") for c in cursors)
    assert any(c.count("-") == 1 for c in cursors), "partition 0 keeps the bare entry id"


def test_events_written_while_paging_neither_repeat_nor_hide_older_ones(audit, rds: redis.Redis) -> None:
    events = trail(rds)
    seen: list[pb.AuditEvent] = []
    token = ""
    newer = BASE + 1_000_000
    while True:
        page = audit.ListAuditEvents(pb.ListAuditEventsRequest(page_size=4, page_token=token))
        seen += page.events
        token = page.next_page_token
        # Newer events land in every partition between pages: they sort before the cursor.
        for p in range(P):
            xadd(rds, newer, 0, p)
        newer += 1
        if not token:
            break
        assert len(seen) < 500, "the walk does not end: a cursor repeats events"
    assert [e.id for e in seen] == [expected_id(e) for e in events]


def test_time_filters_select_across_partitions(audit, rds: redis.Redis) -> None:
    events = trail(rds)
    start, end = BASE + 50, BASE + 300  # an id with all three partitions on each bound
    inside = [e for e in events if start <= e[0] < end]
    assert {e[2] for e in inside} == set(range(P))
    assert {e[2] for e in events if e[0] == start} == {e[2] for e in events if e[0] == end} == {0, 1, 2}
    for size in (1, 2, 5, 1000):
        got = flat(walk(audit, start_time=ts_ms(start), end_time=ts_ms(end), page_size=size))
        assert [e.id for e in got] == [expected_id(e) for e in inside], size
    since = flat(walk(audit, start_time=ts_ms(start), page_size=3))
    assert [e.id for e in since] == [expected_id(e) for e in events if e[0] >= start]
    until = flat(walk(audit, end_time=ts_ms(end), page_size=3))
    assert [e.id for e in until] == [expected_id(e) for e in events if e[0] < end]
    assert flat(walk(audit, end_time=ts_ms(BASE))) == []


def test_filters_skip_events_of_other_namespaces_in_every_partition(audit, rds: redis.Redis) -> None:
    mine: list[Event] = []
    for i in range(60):
        for p in range(P):
            namespace = "team-a" if (i + p) % 4 == 0 else "default"
            event = xadd(rds, BASE + i, 0, p, namespace)
            if namespace == "team-a":
                mine.append(event)
    mine.sort(reverse=True)
    for size in (1, 4, 1000):
        got = flat(walk(audit, namespace="team-a", page_size=size))
        assert [e.id for e in got] == [expected_id(e) for e in mine]
        assert {e.namespace for e in got} == {"team-a"}


def test_a_cursor_naming_no_partition_of_this_deployment_is_refused(audit, rds: redis.Redis) -> None:
    trail(rds)
    tokens = PageTokens(SECRET.encode(), 3600)
    bound = json.dumps(["audit", "", "", "", None, None])
    good = tokens.encode(bound, f"{BASE + 100}-0-2")
    assert [
        e.id for e in audit.ListAuditEvents(pb.ListAuditEventsRequest(page_size=2, page_token=good)).events
    ] == [
        f"{BASE + 100}-0-1",
        f"{BASE + 100}-0",
    ]
    for cursor in (f"{BASE}-0-3", f"{BASE}-0-0", f"{BASE}-0-02", f"{BASE}", "x"):
        token = tokens.encode(bound, cursor)
        invalid(lambda t=token: audit.ListAuditEvents(pb.ListAuditEventsRequest(page_token=t)), "page_token")
