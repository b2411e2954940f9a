"""Scenarios 4 and 5: Redis restarted (SIGTERM; kill -9 with appendfsync always) and paused."""

from __future__ import annotations

import signal
import time

import grpc
import pytest

from schedcore import pb
from tests.faults import workload
from tests.faults.checker import KEYS, Figures, audit, recorded_ids
from tests.faults.cluster import NOT_SERVING, SERVING, Cluster, cluster, wait_until
from tests.faults.conftest import Recorder
from tests.faults.scenario import LEASE_S, SLACK_S, TIMEOUT, at_fraction, now_ms, sleep_until

pytestmark = TIMEOUT


def stored(c: Cluster) -> tuple[set[bytes], set[str]]:
    client = c.client()
    try:
        tasks = set(client.scan_iter(match=KEYS.task("*"), count=1000))
    finally:
        client.close()
    return tasks, set(recorded_ids(c))


def probe_outage(c: Cluster, task_id: str, until_ms: int) -> tuple[list[str], set[str]]:
    """While Redis is away: every api call must answer UNAVAILABLE, and every Redis-using
    replica's health must turn NOT_SERVING. Returns (problems, codes seen)."""
    problems: list[str] = []
    codes: set[str] = set()
    watched = [*c.apis, *c.schedulers]
    not_serving: set[str] = set()
    stubs = [c.stub(api) for api in c.apis]
    try:
        while now_ms() < until_ms:
            for _, stub in stubs:
                for call in (stub.GetTask, stub.ListTasks):
                    request = pb.GetTaskRequest(id=task_id) if call is stub.GetTask else pb.ListTasksRequest()
                    try:
                        call(request, timeout=10)
                        codes.add("OK")
                    except grpc.RpcError as exc:
                        codes.add(exc.code().name)
            for replica in watched:
                if replica.health() == NOT_SERVING:
                    not_serving.add(replica.name)
            time.sleep(0.1)
    finally:
        for channel, _ in stubs:
            channel.close()
    if codes - {"UNAVAILABLE"}:
        problems.append(f"api answered {sorted(codes)} while Redis was away (only UNAVAILABLE is right)")
    missing = {r.name for r in watched} - not_serving
    if missing:
        problems.append(f"health never read NOT_SERVING during the outage: {sorted(missing)}")
    return problems, codes


def redis_outage(c: Cluster, figures: Recorder, how: str, name: str) -> Figures:
    scale = figures.scale
    w = workload.build(c, scale)
    sleep_until(at_fraction(w.start_ms, w.end_ms, 0.4))
    before_tasks, before_records = stored(c)
    down = now_ms()
    if how == "pause":
        c.redis.signal(signal.SIGSTOP)
        outage = max(scale.outage_s, LEASE_S * 1.5)
    elif how == "term":
        c.redis.stop()
        outage = scale.outage_s
    else:
        c.redis.kill()
        outage = scale.outage_s
    problems, codes = probe_outage(c, w.tasks[0].id, down + int(outage * 1000))
    if how == "pause":
        c.redis.signal(signal.SIGCONT)
    else:
        c.redis.restart()
    up = now_ms()
    watched = [*c.apis, *c.schedulers]
    if not wait_until(lambda: all(r.health() == SERVING for r in watched), 30):
        problems.append("services did not read SERVING again after Redis came back")
    after_tasks, after_records = stored(c)
    if before_tasks - after_tasks:
        problems.append(f"{len(before_tasks - after_tasks)} tasks lost across the outage")
    if before_records - after_records:
        problems.append(f"{len(before_records - after_records)} execution records lost across the outage")
    fig = audit(c, w, name, bound_s=LEASE_S + SLACK_S, outages=[(down, up)])
    fig.problems += problems
    fig.notes = (
        f"Redis away {(up - down) / 1000:.1f} s at 40%; {len(before_tasks)} tasks and "
        f"{len(before_records)} records before, all there after; api answered {'/'.join(sorted(codes))}"
    )
    return fig


@pytest.mark.parametrize(
    ("how", "appendfsync", "name"),
    [
        ("term", "everysec", "4a Redis SIGTERM + restart"),
        ("kill", "always", "4b Redis kill -9 (fsync always)"),
    ],
)
def test_4_redis_restarted(figures: Recorder, how: str, appendfsync: str, name: str) -> None:
    with cluster(appendfsync=appendfsync) as c:
        fig = redis_outage(c, figures, how, name)
    figures(fig)


def test_5_redis_paused_longer_than_a_lease(figures: Recorder) -> None:
    with cluster() as c:
        fig = redis_outage(c, figures, "pause", "5 Redis SIGSTOP > lease")
    figures(fig)
