"""The end-of-scenario audit: due occurrences (from the tasks' schedules) against the execution
records in Redis and the calls the sink counted per idempotency key.

- lost: an occurrence that came due with no record, or whose record is not terminal in time;
- duplicates: a record for no due occurrence (a double or early fire), a sink call for no record,
  and calls of one execution beyond what its record explains (one per attempt, plus one per lease
  that expired under a holder: `rc`, at-least-once with the same key);
- re-runs: calls beyond the first for one execution (the explained at-least-once repeats);
- slowest: finish time minus nominal time, not counting time inside a declared outage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schedcore import pb
from schedcore.store.keys import Keys
from schedcore.timeutil import ts_to_ms
from tests.faults.cluster import Cluster, wait_until
from tests.faults.workload import Workload

S = pb.ExecutionStatus
TERMINAL = {
    S.EXECUTION_STATUS_SUCCEEDED,
    S.EXECUTION_STATUS_FAILED,
    S.EXECUTION_STATUS_TIMED_OUT,
    S.EXECUTION_STATUS_CANCELLED,
    S.EXECUTION_STATUS_SKIPPED,
}
KEYS = Keys()


@dataclass
class Figures:
    scenario: str
    due: int = 0
    executions: int = 0
    lost: int = 0
    duplicates: int = 0
    reruns: int = 0
    skipped: int = 0
    overlapped: int = 0  # SKIPPED by an overlap policy (not counted in `skipped`)
    slowest_s: float = 0.0
    notes: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass
class Record:
    execution: pb.Execution
    status: int
    reclaims: int


def read_records(cluster: Cluster, ids: list[str]) -> dict[str, Record]:
    client = cluster.client()
    try:
        out: dict[str, Record] = {}
        for i in range(0, len(ids), 2000):
            chunk = ids[i : i + 2000]
            with client.pipeline(transaction=False) as pipe:
                for execution_id in chunk:
                    pipe.hmget(KEYS.execution(execution_id), "pb", "status", "rc")
                rows = pipe.execute()
            for execution_id, (raw, status, rc) in zip(chunk, rows, strict=True):
                if raw is not None:
                    out[execution_id] = Record(pb.Execution.FromString(raw), int(status), int(rc or 0))
        return out
    finally:
        client.close()


def recorded_ids(cluster: Cluster) -> list[str]:
    """Every execution id in the global history index."""
    client = cluster.client()
    try:
        return [m.decode().split(":", 1)[1] for m in client.zrange(KEYS.history, 0, -1)]
    finally:
        client.close()


def settle(cluster: Cluster, due: dict[str, tuple[str, int]], timeout: float) -> bool:
    """Wait until every due occurrence has a terminal record."""
    ids = list(due)

    def done() -> bool:
        records = read_records(cluster, ids)
        return len(records) == len(ids) and all(r.status in TERMINAL for r in records.values())

    return wait_until(done, timeout, 0.25)


def outside(nominal_ms: int, finish_ms: int, outages: list[tuple[int, int]]) -> int:
    """Time from nominal to finish, less the part of it spent inside an outage."""
    span = finish_ms - nominal_ms
    for start, end in outages:
        span -= max(0, min(end, finish_ms) - max(start, nominal_ms))
    return span


def _check_record(
    fig: Figures, execution_id: str, record: Record, calls: int, first_call: int | None, allow_skipped: bool
) -> None:
    """One record against the sink: never early, SKIPPED only with the missed-time (or overlap)
    reason and no call, SUCCEEDED with at least one call and at most one per attempt or reclaim."""
    problems = fig.problems
    e = record.execution
    nominal = ts_to_ms(e.nominal_time)
    if ts_to_ms(e.fire_time) < nominal:
        problems.append(f"{execution_id} fired early (fire {e.fire_time.ToJsonString()})")
        fig.duplicates += 1
    if first_call is not None and first_call < nominal:
        problems.append(f"{execution_id}: the sink was called {nominal - first_call} ms early")
        fig.duplicates += 1
    if record.status == S.EXECUTION_STATUS_SKIPPED:
        _check_skipped(fig, execution_id, e, calls, allow_skipped)
    elif record.status == S.EXECUTION_STATUS_SUCCEEDED:
        allowed = e.attempt + record.reclaims
        if calls == 0:
            problems.append(f"{execution_id} SUCCEEDED, yet the sink never saw it")
        if calls > allowed:
            fig.duplicates += calls - allowed
            problems.append(
                f"{execution_id}: {calls} calls, {e.attempt} attempts, {record.reclaims} reclaims"
            )
    elif record.status in TERMINAL:
        problems.append(f"{execution_id} ended {S.Name(record.status)}: {e.status_message}")


def _check_skipped(fig: Figures, execution_id: str, e: pb.Execution, calls: int, allow_skipped: bool) -> None:
    problems = fig.problems
    if calls:
        problems.append(f"{execution_id} SKIPPED, yet the sink was called {calls}x")
    if e.status_message.startswith("overlap: "):
        fig.overlapped += 1  # the workload's SKIP and BUFFER_ONE tasks: legitimate whenever runs overlap
        return
    fig.skipped += 1
    if not allow_skipped:
        problems.append(f"{execution_id} SKIPPED: {e.status_message}")
    elif "missed" not in e.status_message:
        problems.append(f"{execution_id} SKIPPED without the missed-time reason")


def audit(
    cluster: Cluster,
    workload: Workload,
    scenario: str,
    *,
    bound_s: float,
    outages: list[tuple[int, int]] | None = None,
    allow_skipped: bool = False,
    settle_s: float = 60.0,
) -> Figures:
    due = workload.due()
    settle(cluster, due, settle_s)
    ids = recorded_ids(cluster)
    records = read_records(cluster, sorted(set(ids) | set(due)))
    counts = cluster.sink.counts()
    first = cluster.sink.first_calls()
    fig = Figures(scenario, due=len(due), executions=len(records))
    problems = fig.problems

    for execution_id in due:
        record = records.get(execution_id)
        if record is None or record.status not in TERMINAL:
            fig.lost += 1
            problems.append(
                f"lost {execution_id}: {'no record' if record is None else S.Name(record.status)}"
            )
    for execution_id in records.keys() - due.keys():
        fig.duplicates += 1
        problems.append(f"record {execution_id} for no due occurrence")
    for key in counts.keys() - records.keys():
        fig.duplicates += counts[key]
        problems.append(f"sink called {counts[key]}x with key {key!r}, which has no record")

    slowest, slowest_record = 0, pb.Execution()
    for execution_id, record in records.items():
        calls = counts.get(execution_id, 0)
        fig.reruns += max(0, calls - 1)
        _check_record(fig, execution_id, record, calls, first.get(execution_id), allow_skipped)
        e = record.execution
        if record.status in TERMINAL and e.HasField("finish_time"):
            took = outside(ts_to_ms(e.nominal_time), ts_to_ms(e.finish_time), outages or [])
            if took > slowest:
                slowest, slowest_record = took, e
    fig.slowest_s = round(slowest / 1000, 2)
    if fig.slowest_s > bound_s:
        problems.append(
            f"slowest time to a terminal state {fig.slowest_s} s > bound {bound_s} s: "
            + _timeline(slowest_record, counts.get(slowest_record.id, 0))
        )
    restarted = cluster.unexpected_restarts()
    if restarted:
        problems.append(f"processes the scenario did not touch restarted or died: {restarted}")
    return fig


def _timeline(e: pb.Execution, calls: int) -> str:
    """Where the slowest execution's time went, relative to its nominal time (a failure says
    which step was late: firing, the dispatch to a start, or the run itself)."""
    nominal = ts_to_ms(e.nominal_time)
    steps = [
        f"{name} +{(ts_to_ms(getattr(e, name)) - nominal) / 1000:.2f} s"
        for name in ("fire_time", "start_time", "finish_time")
        if e.HasField(name)
    ]
    return f"{e.id} ({', '.join(steps)}; attempt {e.attempt}, {calls} sink calls, executor {e.executor!r})"
