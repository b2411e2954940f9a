"""ListTasks: keyset paging under concurrent writes, both orders, filters, page tokens."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from schedcore import pb
from services.api.app import build as build_api
from tests.conftest import Backend, backend_api, backend_stub
from tests.integration.helpers import (
    TIMEOUT,
    create,
    cron_task,
    invalid,
    list_all_tasks,
    ms_of,
    now_ms,
    once_task,
    stop_service,
    ts_ms,
)
from tests.support import ServiceThread

# Every test that reaches the backend runs on each of tests/conftest.py's BACKENDS (one Redis or a
# cluster, one partition or four), with the api once per module and backend and the data emptied
# before each test: the merge of every partition's index under one cursor is what pages here.
pytestmark = pytest.mark.backends()
api = backend_api
stub = backend_stub

NAME = pb.TaskOrder.TASK_ORDER_NAME
NEXT = pb.TaskOrder.TASK_ORDER_NEXT_RUN_TIME
ACTIVE = pb.TaskState.TASK_STATE_ACTIVE
PAUSED = pb.TaskState.TASK_STATE_PAUSED
COMPLETED = pb.TaskState.TASK_STATE_COMPLETED


def _once_at(name: str, run_ms: int, **fields: object) -> pb.Task:
    task = pb.Task(name=name, **fields)  # type: ignore[arg-type]
    task.schedule.once.run_time.CopyFrom(ts_ms(run_ms))
    task.target.log.SetInParent()
    return task


def _sort_key(task: pb.Task, order: int) -> tuple[object, ...]:
    if order == NEXT:
        nxt = ms_of(task.next_run_time) if task.HasField("next_run_time") else float("inf")
        return (nxt, task.id)
    return (task.name.encode(), task.id)


def _page_through(stub, order: int, page_size: int) -> tuple[list[pb.Task], list[int]]:
    tasks: list[pb.Task] = []
    sizes: list[int] = []
    token = ""
    for _ in range(1000):
        resp = stub.ListTasks(
            pb.ListTasksRequest(page_size=page_size, page_token=token, order_by=order), timeout=TIMEOUT
        )
        tasks += resp.tasks
        sizes.append(len(resp.tasks))
        token = resp.next_page_token
        if not token:
            return tasks, sizes
    raise AssertionError("paging did not end")


def test_paging_1000_tasks_with_concurrent_creates(stub):
    base = now_ms() + 3_600_000
    # Duplicate names and duplicate run times, so the id tie-break matters in both orders.
    specs = [
        _once_at(f"job-{i % 400:04d}", base + (i % 300) * 1000, labels={"batch": "orig"}) for i in range(1000)
    ]
    with ThreadPoolExecutor(16) as pool:
        originals = list(pool.map(lambda t: create(stub, t), specs))
    original_ids = {t.id for t in originals}
    assert len(original_ids) == 1000
    # Some paused tasks: no next run, they come last in next-run order.
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(lambda t: stub.PauseTask(pb.PauseTaskRequest(id=t.id), timeout=TIMEOUT), originals[:25])
        )

    stop = threading.Event()
    created_meanwhile: list[str] = []
    rng = random.Random(7)

    def writer() -> None:
        while not stop.is_set():
            name = f"job-{rng.randrange(400):04d}-new"
            created_meanwhile.append(create(stub, _once_at(name, base + rng.randrange(300) * 1000)).id)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        while len(created_meanwhile) < 5:
            threading.Event().wait(0.01)
        for order in (NAME, NEXT):
            before = len(created_meanwhile)
            listed, sizes = _page_through(stub, order, 37)
            assert len(created_meanwhile) > before, "nothing was created while paging"
            listed_ids = [t.id for t in listed]
            assert len(listed_ids) == len(set(listed_ids)), f"duplicates in order {order}"
            missing = original_ids - set(listed_ids)
            assert not missing, f"{len(missing)} original tasks missing in order {order}"
            assert max(sizes) <= 37 and len(sizes) >= 1000 // 37
            keys = [_sort_key(t, order) for t in listed]
            assert keys == sorted(keys), f"out of order in order {order}"
            if order == NEXT:
                paused_ids = {t.id for t in originals[:25]}
                tail = [t.id for t in listed[-25:]]
                assert set(tail) == paused_ids
    finally:
        stop.set()
        thread.join(TIMEOUT)


def test_default_order_and_default_page_size(stub):
    base = now_ms() + 3_600_000
    specs = [_once_at(f"t{i:03d}", base - i * 1000) for i in range(60)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: create(stub, t), specs))
    first = stub.ListTasks(pb.ListTasksRequest(), timeout=TIMEOUT)
    assert len(first.tasks) == 50
    assert [t.name for t in first.tasks] == [f"t{i:03d}" for i in range(50)]
    assert first.next_page_token
    second = stub.ListTasks(pb.ListTasksRequest(page_token=first.next_page_token), timeout=TIMEOUT)
    assert [t.name for t in second.tasks] == [f"t{i:03d}" for i in range(50, 60)]
    assert second.next_page_token == ""
    # By next run time: the reverse, since later names run sooner.
    by_next = list_all_tasks(stub, order_by=NEXT)
    assert [t.name for t in by_next] == [f"t{i:03d}" for i in reversed(range(60))]
    # page_size may change between pages.
    page = stub.ListTasks(pb.ListTasksRequest(page_size=5), timeout=TIMEOUT)
    page2 = stub.ListTasks(pb.ListTasksRequest(page_size=7, page_token=page.next_page_token), timeout=TIMEOUT)
    assert [t.name for t in page2.tasks] == [f"t{i:03d}" for i in range(5, 12)]
    # Asking for more than a page holds gets a whole page (AIP-158), not INVALID_ARGUMENT.
    everything = stub.ListTasks(pb.ListTasksRequest(page_size=100_000), timeout=TIMEOUT)
    assert len(everything.tasks) == 60 and everything.next_page_token == ""


def test_empty_list(stub):
    resp = stub.ListTasks(pb.ListTasksRequest(), timeout=TIMEOUT)
    assert list(resp.tasks) == [] and resp.next_page_token == ""


def _fixture_tasks(stub, rds, backend: Backend) -> dict[str, pb.Task]:
    made = {
        "alpha": create(stub, once_task("Alpha Report", labels={"env": "prod", "team": "a"})),
        "beta": create(stub, once_task("beta REPORT", labels={"env": "prod", "team": "b"})),
        "gamma": create(stub, cron_task("gamma", "0 * * * *", labels={"env": "dev", "team": "a"})),
        "delta": create(stub, once_task("delta report", labels={"env": "dev"})),
        "eps": create(stub, once_task("epsilon")),
    }
    stub.PauseTask(pb.PauseTaskRequest(id=made["gamma"].id), timeout=TIMEOUT)
    rds.hset(backend.task_key(made["delta"].id), "state", int(COMPLETED))
    return made


def test_filters(stub, rds, backend):
    made = _fixture_tasks(stub, rds, backend)
    name_of = {t.id: k for k, t in made.items()}

    def names(**filters: object) -> list[str]:
        return [name_of[t.id] for t in list_all_tasks(stub, **filters)]

    assert names() == ["alpha", "beta", "delta", "eps", "gamma"]
    assert names(state=PAUSED) == ["gamma"]
    assert names(state=COMPLETED) == ["delta"]
    assert names(state=ACTIVE) == ["alpha", "beta", "eps"]
    assert names(labels={"env": "prod"}) == ["alpha", "beta"]
    assert names(labels={"env": "prod", "team": "a"}) == ["alpha"]
    assert names(labels={"team": "a"}) == ["alpha", "gamma"]
    assert names(labels={"env": "staging"}) == []
    assert names(labels={"team": ""}) == []  # "carries the label with exactly this value"
    assert names(name_contains="report") == ["alpha", "beta", "delta"]
    assert names(name_contains="REPORT") == ["alpha", "beta", "delta"]
    assert names(name_contains="report", state=ACTIVE) == ["alpha", "beta"]
    assert names(name_contains="report", labels={"env": "dev"}) == ["delta"]
    assert names(name_contains="zzz") == []
    # Filters hold across pages.
    assert names(name_contains="report", page_size=1) == ["alpha", "beta", "delta"]
    assert names(labels={"team": "a"}, page_size=1, order_by=NEXT) == ["alpha", "gamma"]


def test_total_size_counts_what_a_filter_by_state_matches(stub, rds, backend):
    made = [create(stub, cron_task(f"t{i}", labels={"team": "a" if i % 2 else "b"})) for i in range(7)]
    for task in made[:3]:
        stub.PauseTask(pb.PauseTaskRequest(id=task.id), timeout=TIMEOUT)

    def total(**filters: object) -> int | None:
        reply = stub.ListTasks(pb.ListTasksRequest(page_size=2, **filters), timeout=TIMEOUT)  # type: ignore[arg-type]
        # The same on a later page.
        later = stub.ListTasks(
            pb.ListTasksRequest(page_size=2, page_token=reply.next_page_token, **filters),  # type: ignore[arg-type]
            timeout=TIMEOUT,
        )
        assert later.HasField("total_size") == reply.HasField("total_size")
        assert later.total_size == reply.total_size
        return reply.total_size if reply.HasField("total_size") else None

    assert total() == 7 == len(list_all_tasks(stub))
    assert total(state=PAUSED) == 3 == len(list_all_tasks(stub, state=PAUSED))
    assert total(state=ACTIVE) == 4 == len(list_all_tasks(stub, state=ACTIVE))
    # Labels and names have no index to count by: no count, rather than a slow or a wrong one.
    assert total(labels={"team": "a"}) is None
    assert total(name_contains="t") is None
    # State counters that miss tasks (stored before the counters existed): no count by state.
    for keys in backend.parts.all:
        rds.delete(keys.task_counts)
    assert total(state=PAUSED) is None
    assert total() == 7


def test_page_token_with_changed_filters_is_rejected(stub, rds, backend):
    _fixture_tasks(stub, rds, backend)
    first = stub.ListTasks(pb.ListTasksRequest(page_size=1, name_contains="report"), timeout=TIMEOUT)
    token = first.next_page_token
    assert token
    changed = [
        pb.ListTasksRequest(page_size=1, page_token=token, name_contains="alpha"),
        pb.ListTasksRequest(page_size=1, page_token=token),
        pb.ListTasksRequest(page_size=1, page_token=token, name_contains="report", state=ACTIVE),
        pb.ListTasksRequest(page_size=1, page_token=token, name_contains="report", labels={"env": "prod"}),
        pb.ListTasksRequest(page_size=1, page_token=token, name_contains="report", order_by=NEXT),
    ]
    for request in changed:
        err = invalid(lambda r=request: stub.ListTasks(r, timeout=TIMEOUT), "page_token")
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The same filters still work with it.
    ok = stub.ListTasks(
        pb.ListTasksRequest(page_size=1, page_token=token, name_contains="report"), timeout=TIMEOUT
    )
    assert len(ok.tasks) == 1


def test_page_token_works_on_another_replica(rds, backend):
    """Replicas share the signing secret through Redis: a token one issued, another accepts."""
    one = ServiceThread(build_api, backend.settings())
    two = ServiceThread(build_api, backend.settings())
    try:
        with grpc.insecure_channel(one.target) as ch1, grpc.insecure_channel(two.target) as ch2:
            stub1 = pb.task_service_grpc.TaskServiceStub(ch1)
            stub2 = pb.task_service_grpc.TaskServiceStub(ch2)
            for i in range(3):
                create(stub1, once_task(f"n{i}"))
            first = stub1.ListTasks(pb.ListTasksRequest(page_size=1), timeout=TIMEOUT)
            assert [t.name for t in first.tasks] == ["n0"]
            resp = stub2.ListTasks(
                pb.ListTasksRequest(page_size=5, page_token=first.next_page_token), timeout=TIMEOUT
            )
            assert [t.name for t in resp.tasks] == ["n1", "n2"]
    finally:
        stop_service(one)
        stop_service(two)
