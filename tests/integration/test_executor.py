"""The executor over real gRPC: credits, the log target, batching, renewals, results of a gone
stream (through a fake SchedulerService), shutdown hand-back, unknown targets.

The executor runs in-process (ServiceThread); a "scheduler" here is a bidirectional call driven
from the test. Helpers below are shared with test_executor_http.py and test_executor_process.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import REGISTRY

from schedcore import ipb, pb
from schedcore.settings import Settings
from services.executor.app import build as build_executor
from services.executor.outbox import Outbox
from tests.support import ServiceThread, free_port, wait_for

EXECUTOR_ID = "executor-test"
PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING
SUCCEEDED = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
FAILED = pb.ExecutionStatus.EXECUTION_STATUS_FAILED
TIMED_OUT = pb.ExecutionStatus.EXECUTION_STATUS_TIMED_OUT


# --- helpers --------------------------------------------------------------------------------------


def executor_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        grpc_host="127.0.0.1",
        grpc_plaintext=True,  # as GRPC_PLAINTEXT=true: the TLS tests set up their own
        grpc_port=0,
        instance_id=EXECUTOR_ID,
        executor_concurrency=10,
        executor_prefetch=0,  # the credit tests count slots alone; prefetch has tests of its own
        shutdown_grace_s=1.0,
        health_interval_s=0.1,
        lease_s=10.0,
        scheduler_addr=f"127.0.0.1:{free_port()}",  # nothing listens unless a test says so
    )
    values.update(overrides)
    return Settings(**values)


@contextlib.contextmanager
def executor(**overrides: Any) -> Iterator[ServiceThread]:
    # Test streams ack nothing unless told, so when they end their results go to ReportResults;
    # unless the test picks its own SCHEDULER_ADDR, a fake scheduler takes them, so the executor
    # does not spend its exit retrying an address nobody listens on.
    sink: FakeScheduler | None = None
    if "scheduler_addr" not in overrides:
        sink = FakeScheduler(free_port())
        overrides["scheduler_addr"] = f"127.0.0.1:{sink.port}"
    service = ServiceThread(build_executor, executor_settings(**overrides))
    try:
        yield service
    finally:
        service.stop()
        if sink is not None:
            sink.stop()


_counter = iter(range(1, 1_000_000))


def item(target: pb.Target | None = None, timeout_s: float | None = None, **fields: Any) -> ipb.WorkItem:
    n = next(_counter)
    work = ipb.WorkItem(
        execution_id=fields.pop("execution_id", f"task{n:04d}-{1_700_000_000_000 + n:013d}"),
        task_id=fields.pop("task_id", f"task{n:04d}"),
        lease_token=fields.pop("lease_token", 100 + n),
        attempt=fields.pop("attempt", 1),
        task_name=fields.pop("task_name", f"test task {n}"),
        **fields,
    )
    if target is not None:
        work.target.CopyFrom(target)
    if timeout_s is not None:
        work.timeout.CopyFrom(Duration(seconds=int(timeout_s), nanos=int(timeout_s % 1 * 1e9)))
    return work


def log_item(**fields: Any) -> ipb.WorkItem:
    return item(pb.Target(log=pb.LogTarget()), **fields)


def http_item(url: str, timeout_s: float | None = 5.0, **http: Any) -> ipb.WorkItem:
    return item(pb.Target(http=pb.HttpTarget(url=url, **http)), timeout_s=timeout_s)


class SchedulerStream:
    """One Execute call as a scheduler makes it; every response is recorded. It acks no result
    unless told (`ack`), or made with auto_ack (acks each response's results once read, as a
    scheduler does once it recorded them); results it did not ack reach ReportResults when the
    call ends."""

    def __init__(self, target: str, auto_ack: bool = False, channel: grpc.Channel | None = None) -> None:
        self.auto_ack = auto_ack
        self.channel = channel if channel is not None else grpc.insecure_channel(target)
        self._requests: queue.Queue[ipb.ExecuteRequest | None] = queue.Queue()
        stub = ipb.executor_grpc.ExecutorServiceStub(self.channel)
        self.call = stub.Execute(iter(self._requests.get, None), timeout=60)
        self.responses: list[ipb.ExecuteResponse] = []
        self.ended = threading.Event()
        self.error: grpc.RpcError | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.append(response)
                if self.auto_ack and response.results:
                    self.ack(response.results)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.ended.set()

    def send(
        self,
        items: Iterable[ipb.WorkItem] = (),
        demand: int = 0,
        release: int = 0,
        cancels: Iterable[ipb.executor_pb2.CancelAttempt] = (),
    ) -> None:
        request = ipb.ExecuteRequest(
            items=list(items), demand=demand, release=release, scheduler_id="test", cancels=list(cancels)
        )
        self._requests.put(request)

    def ack(self, results: Iterable[ipb.WorkResult]) -> None:
        """Acknowledge results as recorded (a message carrying acks only)."""
        acks = [ipb.ResultAck(execution_id=r.execution_id, lease_token=r.lease_token) for r in results]
        self._requests.put(ipb.ExecuteRequest(acks=acks))

    def half_close(self) -> None:
        self._requests.put(None)

    def cancel(self) -> None:
        self.call.cancel()
        self.ended.wait(5)

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()

    @property
    def granted(self) -> int:
        return sum(r.grant for r in self.responses)

    @property
    def results(self) -> list[ipb.WorkResult]:
        return [x for r in list(self.responses) for x in r.results]

    def result(self, execution_id: str, timeout: float = 10.0) -> ipb.WorkResult:
        found: list[ipb.WorkResult] = []

        def arrived() -> bool:
            found[:] = [r for r in self.results if r.execution_id == execution_id]
            return bool(found)

        wait_for(arrived, timeout=timeout, interval=0.01)
        return found[0]

    def wait_results(self, count: int, timeout: float = 10.0) -> list[ipb.WorkResult]:
        wait_for(lambda: len(self.results) >= count, timeout=timeout, interval=0.01)
        return self.results

    def wait_granted(self, count: int, timeout: float = 5.0) -> None:
        wait_for(lambda: self.granted >= count, timeout=timeout, interval=0.01)


@contextlib.contextmanager
def scheduler_stream(service: ServiceThread, auto_ack: bool = False) -> Iterator[SchedulerStream]:
    stream = SchedulerStream(service.target, auto_ack=auto_ack)
    try:
        yield stream
    finally:
        stream.close()


class Endpoint(BaseHTTPRequestHandler):
    """/ok, /status/<code>, /echo (the request headers as JSON), /form (the request headers
    URL-encoded, as a form body), /big/<bytes>, /sleep/<seconds>,
    /hang, /block/<name> (waits until the test opens the gate of that name), /linger/<seconds>
    (answers after that long unless the client hangs up first: the path is then in the server's
    `hangups`). Every request is recorded."""

    server: HttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.received.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        parts = self.path.strip("/").split("/")
        status, payload = 200, b"fine \xe2\x9c\x93"
        if parts[0] == "status":
            status, payload = int(parts[1]), f"status {parts[1]} body".encode()
        elif parts[0] == "echo":  # the request's headers, as a careless target might show them
            payload = json.dumps(dict(self.headers)).encode()
        elif parts[0] == "form":
            payload = urlencode(dict(self.headers)).encode()
        elif parts[0] == "big":
            payload = b"x" * int(parts[1])
        elif parts[0] == "sleep":
            time.sleep(float(parts[1]))
        elif parts[0] == "hang":
            self.server.stopping.wait(30)
        elif parts[0] == "block":
            self.server.gate(parts[1]).wait(30)
        elif parts[0] == "linger" and self._hung_up_within(float(parts[1])):
            self.server.hangups.append(self.path)
            return
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        if status in (301, 302, 303, 307, 308):
            self.send_header("Location", "/ok")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _hung_up_within(self, seconds: float) -> bool:
        """Whether the client closed the connection within `seconds` (it sends nothing more)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                try:
                    return self.connection.recv(1, socket.MSG_PEEK) == b""
                except ConnectionError:
                    return True
        return False

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Endpoint)
        self.received: list[dict[str, Any]] = []
        self.hangups: list[str] = []
        self.stopping = threading.Event()
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the executor hung up on /hang or /block: expected

    def gate(self, name: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(name, threading.Event())

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class FakeScheduler:
    """A SchedulerService on a real grpc.aio server in a thread of its own; records every
    ReportResults call."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[ipb.ReportResultsRequest] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: grpc.aio.Server = self._run(self._start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _start(self) -> grpc.aio.Server:
        fake = self

        class Servicer(ipb.scheduler_grpc.SchedulerServiceServicer):
            async def ReportResults(
                self, request: ipb.ReportResultsRequest, context: grpc.aio.ServicerContext
            ) -> ipb.ReportResultsResponse:
                fake.requests.append(request)
                return ipb.ReportResultsResponse(recorded=len(request.results))

        server = grpc.aio.server()
        ipb.scheduler_grpc.add_SchedulerServiceServicer_to_server(Servicer(), server)
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        return server

    @property
    def results(self) -> list[ipb.WorkResult]:
        return [r for req in list(self.requests) for r in req.results]

    @property
    def renewals(self) -> list[ipb.LeaseRenewal]:
        return [r for req in list(self.requests) for r in req.renewals]

    def stop(self) -> None:
        self._run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def assert_complete(result: ipb.WorkResult, work: ipb.WorkItem) -> None:
    """Every result carries the token, the executor's id, start and finish times."""
    assert result.execution_id == work.execution_id
    assert result.lease_token == work.lease_token
    assert result.executor_id == EXECUTOR_ID
    assert result.HasField("start_time") and result.HasField("finish_time")
    assert result.start_time.ToNanoseconds() <= result.finish_time.ToNanoseconds()
    assert abs(result.finish_time.ToNanoseconds() / 1e9 - time.time()) < 60


def stays(predicate: Callable[[], bool], seconds: float) -> bool:
    """Whether `predicate` holds for the whole period."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.01)
    return predicate()


# --- credits --------------------------------------------------------------------------------------


def test_grants_never_exceed_the_slots_and_come_back_as_attempts_end(http_server: HttpServer) -> None:
    with executor(executor_concurrency=3) as ex, scheduler_stream(ex) as s:
        s.send(demand=10)
        s.wait_granted(3)
        assert stays(lambda: s.granted == 3, 0.3)

        # Use the three credits on attempts that wait at the test server's gate.
        blocked = [http_item(http_server.url(f"/block/g{i}")) for i in range(3)]
        s.send(blocked, demand=7)
        wait_for(lambda: len(http_server.received) == 3)
        assert stays(lambda: s.granted == 3, 0.2), "no slot is free while three attempts run"

        # An item beyond the credits is not run: handed back at once.
        extra = http_item(http_server.url("/ok"))
        s.send([extra], demand=7)
        back = s.result(extra.execution_id, timeout=2)
        assert back.status == PENDING
        assert "credit" in back.status_message
        assert_complete(back, extra)
        assert len(http_server.received) == 3

        # One attempt ends: its slot is granted again, and only that one.
        http_server.gate("g0").set()
        assert s.result(blocked[0].execution_id).status == SUCCEEDED
        s.wait_granted(4)
        assert stays(lambda: s.granted == 4, 0.2)

        for i in (1, 2):
            http_server.gate(f"g{i}").set()
        s.wait_results(4)
        s.wait_granted(6)
        assert stays(lambda: s.granted == 6, 0.2)


def test_two_streams_share_the_slots_and_release_gives_credit_back() -> None:
    with executor(executor_concurrency=3) as ex, scheduler_stream(ex) as a, scheduler_stream(ex) as b:
        a.send(demand=2)
        a.wait_granted(2)
        b.send(demand=5)
        b.wait_granted(1)
        assert stays(lambda: a.granted + b.granted == 3, 0.3)

        # A hands its two credits back and wants nothing more: they go to B.
        a.send(release=2, demand=0)
        b.wait_granted(3)
        assert stays(lambda: (a.granted, b.granted) == (2, 3), 0.3)

        # Used credits free their slot when the attempt ends, for whichever stream wants it.
        b.send([log_item() for _ in range(3)], demand=1)
        b.wait_results(3)
        b.wait_granted(4)
        assert stays(lambda: b.granted == 4 and a.granted == 2, 0.2), "demand 1 gets one credit"


def test_half_closed_stream_returns_its_credits_and_still_gets_its_results(http_server: HttpServer) -> None:
    with executor(executor_concurrency=2) as ex, scheduler_stream(ex) as a, scheduler_stream(ex) as b:
        a.send(demand=2)
        a.wait_granted(2)
        work = http_item(http_server.url("/block/hc"))
        a.send([work])  # one credit used, one held
        wait_for(lambda: len(http_server.received) == 1)
        b.send(demand=5)
        assert stays(lambda: b.granted == 0, 0.2)

        a.half_close()  # the scheduler sends no more: its unused credit goes to B
        b.wait_granted(1)
        assert not a.ended.is_set(), "the call stays open while its attempt runs"
        http_server.gate("hc").set()
        assert a.result(work.execution_id).status == SUCCEEDED
        assert a.ended.wait(5)
        assert a.error is None
        b.wait_granted(2)


def set_pace(s: SchedulerStream, count: int) -> None:
    """Run `count` log items through the stream as fast as credits allow, so the executor has a
    recent pace (completions per second) to size its prefetch by; ends with no credit held."""
    sent = s.granted
    s.send(demand=count)
    done = 0
    while done < count:
        s.wait_granted(sent + 1)
        n = min(s.granted - sent, count - done)
        s.send([log_item() for _ in range(n)], demand=count - done - n)
        sent += n
        done += n
    s.wait_results(count)


def attempts_gauge(name: str) -> float:
    """The in-process executor's tasksched_executor_attempts_<name> (the http target's connection
    pool would hide a third attempt from the test server, not from this)."""
    return REGISTRY.get_sample_value(f"tasksched_executor_attempts_{name}") or 0.0


def test_prefetched_items_wait_for_a_slot_in_order_and_are_renewed_while_they_wait(
    http_server: HttpServer,
) -> None:
    base = attempts_gauge("in_flight")
    with executor(executor_concurrency=2, executor_prefetch=2, lease_s=0.6) as ex, scheduler_stream(ex) as s:
        set_pace(s, 100)  # 100 finished within the last second: a prefetch of 10, capped at 2
        before = s.granted
        s.send(demand=10)
        s.wait_granted(before + 4)
        assert stays(lambda: s.granted == before + 4, 0.3), (
            "credits cover the slots and the prefetch, no more"
        )

        work = [http_item(http_server.url(f"/block/p{i}"), timeout_s=10) for i in range(4)]
        s.send(work, demand=6)
        wait_for(lambda: len(http_server.received) == 2)
        assert stays(lambda: len(http_server.received) == 2, 0.3), "two slots: two attempts run"
        assert (attempts_gauge("in_flight") - base, attempts_gauge("queued")) == (2, 2)

        def renewed() -> set[str]:
            return {x.execution_id for r in list(s.responses) for x in r.renewals}

        wait_for(lambda: renewed() == {w.execution_id for w in work}, timeout=3)  # queued ones too

        http_server.gate("p0").set()
        first = s.result(work[0].execution_id)
        assert first.status == SUCCEEDED
        wait_for(lambda: len(http_server.received) == 3)
        assert stays(lambda: (attempts_gauge("in_flight") - base, attempts_gauge("queued")) == (2, 1), 0.2), (
            "one slot freed: one more attempt"
        )
        assert http_server.received[2]["path"] == "/block/p2", "the oldest queued item starts first"
        for i in (1, 2, 3):
            http_server.gate(f"p{i}").set()
        results = {r.execution_id: r for r in s.wait_results(104)}
        assert all(results[w.execution_id].status == SUCCEEDED for w in work)
        # A queued item's start is when it ran, not when it arrived: lag counts the wait.
        assert results[work[2].execution_id].start_time.ToNanoseconds() >= first.finish_time.ToNanoseconds()


def test_an_executor_without_a_recent_pace_prefetches_nothing(http_server: HttpServer) -> None:
    """Stuck or slow attempts finish nothing: the executor then accepts only what its slots run,
    and work due meanwhile waits in Redis for another executor instead of queueing here."""
    with executor(executor_concurrency=2, executor_prefetch=50) as ex, scheduler_stream(ex) as s:
        s.send(demand=10)
        s.wait_granted(2)
        assert stays(lambda: s.granted == 2, 0.3), "nothing finished lately: no prefetch"
        s.send([http_item(http_server.url(f"/block/s{i}"), timeout_s=10) for i in range(2)], demand=10)
        wait_for(lambda: len(http_server.received) == 2)
        assert stays(lambda: s.granted == 2, 0.5), "both slots busy, nothing finishing: no credit"


def test_shutdown_hands_back_queued_items_at_once(http_server: HttpServer) -> None:
    long = http_item(http_server.url("/hang"), timeout_s=30)
    queued = [log_item(), log_item()]
    port = free_port()
    fake = FakeScheduler(port)
    settings = executor_settings(
        scheduler_addr=f"127.0.0.1:{port}", executor_concurrency=1, executor_prefetch=2
    )
    ex = ServiceThread(build_executor, settings)
    s = SchedulerStream(ex.target, auto_ack=True)
    try:
        set_pace(s, 50)  # a prefetch of 5, capped at 2
        before = s.granted
        s.send(demand=3)
        s.wait_granted(before + 3)
        s.send([long, *queued])
        wait_for(lambda: len(http_server.received) == 1)
        assert stays(lambda: len(s.results) == 50, 0.2), "the log items wait behind the running one"
        ex.stop(grace=1.5)
        assert s.ended.wait(5)
    finally:
        s.close()
        fake.stop()
    back = {r.execution_id: r for r in s.results}
    for work in queued:
        assert back[work.execution_id].status == PENDING
        assert "queued item handed back unrun" in back[work.execution_id].status_message
        assert_complete(back[work.execution_id], work)
    cut = back[long.execution_id]
    assert cut.status == PENDING and "shutting down" in cut.status_message
    # Queued items do not wait for the grace: they were back before the running one was cut.
    gap_s = (
        cut.finish_time.ToNanoseconds()
        - max(back[w.execution_id].finish_time.ToNanoseconds() for w in queued)
    ) / 1e9
    assert gap_s >= 1.0


def test_no_grant_without_demand() -> None:
    with executor(executor_concurrency=3) as ex, scheduler_stream(ex) as s:
        s.send(demand=0)
        assert stays(lambda: s.granted == 0, 0.3)


# --- log target and batching ----------------------------------------------------------------------


def test_log_target_records_payload_and_metadata() -> None:
    payload = Struct()
    payload.update({"city": "Zürich", "n": 3, "nested": {"ok": True}})
    nominal = Timestamp(seconds=1_767_225_600)
    work = log_item(payload=payload, nominal_time=nominal, attempt=2, task_name="nightly report")
    with executor() as ex, scheduler_stream(ex) as s:
        s.send(demand=1)
        s.wait_granted(1)
        s.send([work])
        result = s.result(work.execution_id)
    assert result.status == SUCCEEDED
    assert_complete(result, work)
    record = json.loads(result.result.output)
    assert record["payload"] == {"city": "Zürich", "n": 3, "nested": {"ok": True}}
    assert record["execution_id"] == work.execution_id
    assert record["task_id"] == work.task_id
    assert record["task_name"] == "nightly report"
    assert record["attempt"] == 2
    assert record["nominal_time"] == "2026-01-01T00:00:00Z"
    assert record["executor_id"] == EXECUTOR_ID
    assert record["start_time"].startswith(time.strftime("%Y-", time.gmtime()))
    assert not result.result.output_truncated


def test_log_output_is_bounded() -> None:
    payload = Struct()
    payload.update({"text": "é" * 2000})
    work = log_item(payload=payload)
    with executor(output_limit_bytes=300) as ex, scheduler_stream(ex) as s:
        s.send(demand=1)
        s.wait_granted(1)
        s.send([work])
        result = s.result(work.execution_id)
    assert result.status == SUCCEEDED
    assert result.result.output_truncated
    size = len(result.result.output.encode())
    assert 290 <= size <= 300
    assert result.result.output.startswith('{"execution_id":"' + work.execution_id)


def test_results_are_batched() -> None:
    with executor(executor_concurrency=200) as ex, scheduler_stream(ex) as s:
        s.send(demand=200)
        s.wait_granted(200)
        work = [log_item() for _ in range(200)]
        s.send(work)
        results = s.wait_results(200)
        carrying = [r for r in s.responses if r.results]
    assert len(carrying) <= 20, f"{len(carrying)} messages for 200 results"
    assert sorted(r.execution_id for r in results) == sorted(w.execution_id for w in work)
    assert all(r.status == SUCCEEDED for r in results)
    by_id = {w.execution_id: w for w in work}
    for result in results:
        assert_complete(result, by_id[result.execution_id])


def test_unknown_or_unset_target_fails_not_retryable() -> None:
    unset = item()  # no target at all
    empty = item(pb.Target())  # a Target with no kind set
    with executor() as ex, scheduler_stream(ex) as s:
        s.send(demand=2)
        s.wait_granted(2)
        s.send([unset, empty])
        for work in (unset, empty):
            result = s.result(work.execution_id)
            assert result.status == FAILED
            assert not result.retryable
            assert "unknown target kind" in result.status_message
            assert_complete(result, work)


# --- renewals, a gone stream ----------------------------------------------------------------------


def test_running_attempts_are_renewed(http_server: HttpServer) -> None:
    work = http_item(http_server.url("/block/renew"), timeout_s=5)
    with executor(lease_s=0.6) as ex, scheduler_stream(ex) as s:
        s.send(demand=1)
        s.wait_granted(1)
        s.send([work])

        def renewals() -> list[ipb.LeaseRenewal]:
            return [x for r in list(s.responses) for x in r.renewals]

        wait_for(lambda: len(renewals()) >= 3, timeout=3)
        expected = (work.execution_id, work.lease_token)
        assert all((r.execution_id, r.lease_token) == expected for r in renewals())
        http_server.gate("renew").set()
        assert s.result(work.execution_id).status == SUCCEEDED
        count = len(renewals())
        assert stays(lambda: len(renewals()) == count, 0.5), "no renewal once the attempt ended"


def test_result_of_a_gone_stream_goes_to_report_results(http_server: HttpServer) -> None:
    port = free_port()
    fake = FakeScheduler(port)
    work = http_item(http_server.url("/block/gone"), timeout_s=5)
    try:
        with executor(lease_s=0.6, scheduler_addr=f"127.0.0.1:{port}") as ex:
            s = SchedulerStream(ex.target)
            s.send(demand=1)
            s.wait_granted(1)
            s.send([work])
            wait_for(lambda: len(http_server.received) == 1)
            s.cancel()  # the scheduler dies while the attempt runs
            s.channel.close()

            # Its lease is kept alive through ReportResults...
            wait_for(lambda: any(r.execution_id == work.execution_id for r in fake.renewals), timeout=3)
            # ...and the result is delivered there.
            http_server.gate("gone").set()
            wait_for(lambda: len(fake.results) == 1, timeout=5)
    finally:
        fake.stop()
    result = fake.results[0]
    assert result.status == SUCCEEDED
    assert result.result.http.status_code == 200
    assert_complete(result, work)
    assert all(req.executor_id == EXECUTOR_ID for req in fake.requests)


def test_report_results_is_retried_until_a_scheduler_answers(http_server: HttpServer) -> None:
    port = free_port()
    work = http_item(http_server.url("/hang"), timeout_s=0.3)
    fake: FakeScheduler | None = None
    try:
        with executor(scheduler_addr=f"127.0.0.1:{port}") as ex:
            s = SchedulerStream(ex.target)
            s.send(demand=1)
            s.wait_granted(1)
            s.send([work])
            wait_for(lambda: len(http_server.received) == 1)
            s.cancel()
            s.channel.close()
            time.sleep(1.0)  # the attempt timed out; no scheduler answers yet
            fake = FakeScheduler(port)
            wait_for(lambda: len(fake.results) == 1, timeout=5)
    finally:
        if fake is not None:
            fake.stop()
    assert fake.results[0].status == TIMED_OUT
    assert_complete(fake.results[0], work)


# --- acks: results kept until the scheduler recorded them -----------------------------------------


def test_acked_results_are_not_reported_again_when_the_stream_breaks() -> None:
    port = free_port()
    fake = FakeScheduler(port)
    acked = [log_item() for _ in range(3)]
    last = log_item()
    try:
        with executor(scheduler_addr=f"127.0.0.1:{port}") as ex:
            s = SchedulerStream(ex.target)
            s.send(demand=4)
            s.wait_granted(4)
            s.send(acked)
            s.ack(s.wait_results(3))
            # Requests are handled in order: once this item's result is back, the acks were taken.
            s.send([last])
            s.result(last.execution_id)
            s.cancel()  # the scheduler dies
            s.channel.close()

            # Only the result it never acked comes again.
            wait_for(lambda: len(fake.results) >= 1, timeout=5)
            assert stays(lambda: len(fake.results) == 1, 0.5)
    finally:
        fake.stop()
    assert [r.execution_id for r in fake.results] == [last.execution_id]
    assert_complete(fake.results[0], last)


def test_results_sent_but_never_acked_are_reported_when_the_stream_is_cancelled() -> None:
    port = free_port()
    fake = FakeScheduler(port)
    work = [log_item() for _ in range(5)]
    try:
        with executor(scheduler_addr=f"127.0.0.1:{port}") as ex:
            s = SchedulerStream(ex.target)
            s.send(demand=5)
            s.wait_granted(5)
            s.send(work)
            on_stream = {r.execution_id: r for r in s.wait_results(5)}
            assert stays(lambda: fake.requests == [], 0.3), "nothing goes another way while the stream lives"
            s.cancel()  # the scheduler dies before recording (or acking) any of them
            s.channel.close()
            wait_for(lambda: len(fake.results) >= 5, timeout=5)
            assert stays(lambda: len(fake.results) == 5, 0.3)
    finally:
        fake.stop()
    reported = {r.execution_id: r for r in fake.results}
    assert reported == on_stream, "the very results sent on the stream, each once"
    for w in work:
        assert reported[w.execution_id].status == SUCCEEDED
        assert_complete(reported[w.execution_id], w)
    assert all(req.executor_id == EXECUTOR_ID for req in fake.requests)


def test_half_closed_stream_reports_what_it_did_not_ack(http_server: HttpServer) -> None:
    port = free_port()
    fake = FakeScheduler(port)
    first, second = log_item(), http_item(http_server.url("/block/hc-ack"))
    try:
        with executor(scheduler_addr=f"127.0.0.1:{port}") as ex:
            s = SchedulerStream(ex.target)
            s.send(demand=2)
            s.wait_granted(2)
            s.send([first, second])
            s.ack([s.result(first.execution_id)])
            s.half_close()  # it can send no ack any more
            http_server.gate("hc-ack").set()
            assert s.result(second.execution_id).status == SUCCEEDED
            assert s.ended.wait(5) and s.error is None
            wait_for(lambda: len(fake.results) >= 1, timeout=5)
            assert stays(lambda: len(fake.results) == 1, 0.3)
    finally:
        fake.stop()
    assert [r.execution_id for r in fake.results] == [second.execution_id]


def test_acks_alone_leave_the_demand_as_it_was(http_server: HttpServer) -> None:
    with executor(executor_concurrency=2) as ex, scheduler_stream(ex) as s:
        s.send(demand=4)
        s.wait_granted(2)
        blocked = [http_item(http_server.url(f"/block/ad{i}")) for i in range(2)]
        s.send(blocked, demand=4)
        wait_for(lambda: len(http_server.received) == 2)
        s.ack([ipb.WorkResult(execution_id="not-sent", lease_token=1)])  # demand 0 on the wire
        time.sleep(0.2)
        for i in range(2):
            http_server.gate(f"ad{i}").set()
        s.wait_results(2)
        s.wait_granted(4)  # the freed slots still go to the demand of 4


def test_unacked_results_are_bounded_by_count_and_age() -> None:
    def result(n: int) -> ipb.WorkResult:
        return ipb.WorkResult(execution_id=f"e{n}", lease_token=n)

    async def scenario() -> None:
        box = Outbox(EXECUTOR_ID, linger_s=0, max_unacked=3, max_unacked_age_s=60)
        for n in range(5):
            box.add_result(result(n))
        message = await box.next()
        assert message is not None and len(message.results) == 5
        assert list(box.unacked) == [("e2", 2), ("e3", 3), ("e4", 4)], "the oldest went first"
        assert box.ack([ipb.ResultAck(execution_id="e3", lease_token=3)]) == 1
        assert box.ack([ipb.ResultAck(execution_id="e3", lease_token=99)]) == 0
        sent_at = box.unacked[("e2", 2)][0]
        assert box.prune(sent_at + 59) == []
        assert [r.execution_id for r in box.prune(sent_at + 61)] == ["e2", "e4"]
        assert box.unacked == {}
        assert await box.wait_acked(0.01)

        box.add_result(result(7))
        await box.next()
        assert not await box.wait_acked(0.01)
        box.add_result(result(8))  # not sent yet
        assert [r.execution_id for r in box.take_results()] == ["e7", "e8"]
        assert box.unacked == {} and box.results == []

    asyncio.run(scenario())


# --- shutdown -------------------------------------------------------------------------------------


def test_shutdown_lets_short_attempts_finish_and_hands_back_long_ones(http_server: HttpServer) -> None:
    short = http_item(http_server.url("/sleep/0.3"), timeout_s=10)
    long = http_item(http_server.url("/hang"), timeout_s=30)
    port = free_port()
    fake = FakeScheduler(port)
    ex = ServiceThread(build_executor, executor_settings(scheduler_addr=f"127.0.0.1:{port}"))
    s = SchedulerStream(ex.target, auto_ack=True)  # acks what it gets, as a scheduler does
    try:
        s.send(demand=2)
        s.wait_granted(2)
        s.send([short, long], demand=5)
        wait_for(lambda: len(http_server.received) == 2)
        s.wait_granted(7)
        started = time.monotonic()
        ex.stop(grace=1.0)
        stopped_in = time.monotonic() - started
        assert s.ended.wait(5)
    finally:
        s.close()
        fake.stop()
    assert s.error is None, s.error  # the stream ended cleanly, after the hand-back
    assert fake.results == [], "results acked on the stream are not reported again"
    assert 1.0 <= stopped_in < 4.0
    assert s.result(short.execution_id).status == SUCCEEDED
    back = s.result(long.execution_id)
    assert back.status == PENDING
    assert "shutting down" in back.status_message
    assert_complete(back, long)
    assert s.granted == 7, "no credit is granted while draining"
