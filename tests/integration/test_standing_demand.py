"""Standing demand (services/scheduler/dispatch.py): after its backlog is sent, a scheduler keeps
announcing what it dispatched recently, so periodic work finds credits waiting; once nothing was
dispatched for a while, it announces zero and hands its credits back.

A real scheduler process talks to a scripted executor (a gRPC server in this test) that grants
credits as a real one does (up to the demand announced, here without a bound of slots), answers
every item with a result at once, and notes every request it receives.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from schedcore import ipb, pb
from services.scheduler.dispatch import RELEASE_AFTER_S, STANDING_WINDOW_S
from tests.integration.engine_support import once_in, suite
from tests.support import RedisServer, free_port, wait_for


class ScriptedExecutor(ipb.executor_grpc.ExecutorServiceServicer):
    def __init__(self) -> None:
        self.seen: list[tuple[float, ipb.ExecuteRequest]] = []
        self.lock = threading.Lock()

    def requests(self) -> list[tuple[float, ipb.ExecuteRequest]]:
        with self.lock:
            return list(self.seen)

    def Execute(self, request_iterator, context) -> Iterator[ipb.ExecuteResponse]:  # type: ignore[no-untyped-def]
        out: queue.Queue[ipb.ExecuteResponse | None] = queue.Queue()

        def read() -> None:
            try:
                answer()
            except grpc.RpcError:  # the call ended (the scheduler was killed, the server stopped)
                pass
            finally:
                out.put(None)  # ends the response loop, so the server's worker thread ends too

        def answer() -> None:
            outstanding = 0  # credits granted and not used or released
            for request in request_iterator:
                with self.lock:
                    self.seen.append((time.monotonic(), request))
                outstanding -= len(request.items) + request.release
                if request.demand > outstanding:
                    out.put(ipb.ExecuteResponse(grant=request.demand - outstanding, executor_id="scripted"))
                    outstanding = request.demand
                if request.items:
                    now = Timestamp()
                    now.GetCurrentTime()
                    results = [
                        ipb.WorkResult(
                            execution_id=item.execution_id,
                            lease_token=item.lease_token,
                            status=pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED,
                            start_time=now,
                            finish_time=now,
                            executor_id="scripted",
                        )
                        for item in request.items
                    ]
                    out.put(ipb.ExecuteResponse(results=results, executor_id="scripted"))

        threading.Thread(target=read, daemon=True).start()
        while context.is_active():
            try:
                response = out.get(timeout=0.2)
            except queue.Empty:
                continue
            if response is None:
                return
            yield response


def test_demand_stands_after_a_dispatch_then_falls_to_zero_with_a_release(
    redis_srv: RedisServer, rds
) -> None:
    executor = ScriptedExecutor()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    ipb.executor_grpc.add_ExecutorServiceServicer_to_server(executor, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        with suite(redis_srv, schedulers=0, executors=0) as s:
            s.executor_ports = [port]
            s.start_scheduler()
            wait_for(lambda: len(executor.requests()) >= 1, 10)  # the stream is up
            due = once_in(1.5)  # one instant: the ten are dispatched in one round
            tasks = [s.create(f"t{i}", due) for i in range(10)]
            wait_for(lambda: sum(len(r.items) for _, r in executor.requests()) >= len(tasks), 10)
            [(sent_at, carrying)] = [(t, r) for t, r in executor.requests() if r.items]
            assert len(carrying.items) == len(tasks)
            # Nothing was left waiting, yet the scheduler asks for as much again.
            assert carrying.demand == len(tasks)

            def released() -> bool:
                return any(r.release for t, r in executor.requests() if t > sent_at)

            wait_for(released, STANDING_WINDOW_S + RELEASE_AFTER_S + 5)
            later = [(t, r) for t, r in executor.requests() if t > sent_at]
            [(released_at, release)] = [(t, r) for t, r in later if r.release]
            assert release.release == len(tasks) and release.demand == 0
            # It stood for the window (not released the moment the backlog was empty).
            assert released_at - sent_at >= STANDING_WINDOW_S
            ended = [s.wait_terminal(t.id, 1)[0].status for t in tasks]
            assert set(ended) == {pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED}
    finally:
        server.stop(0).wait(5)
