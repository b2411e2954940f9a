"""MAX_DELIVERIES (docs/engine.md, "Known limits"): an execution whose executor is lost on every
delivery (SIGKILLed mid-attempt here, as a target that crashes it would) is reclaimed and
delivered again until MAX_DELIVERIES deliveries were lost, then ends FAILED saying so: not
reclaimed forever. The target saw exactly that many calls."""

from __future__ import annotations

import signal
import time

from schedcore import pb
from tests.integration.engine_support import http, once_in, suite
from tests.sink import Sink
from tests.support import RedisServer, wait_for

DELIVERIES = 2


def test_an_execution_losing_its_executor_every_time_ends_failed_after_max_deliveries(
    redis_srv: RedisServer,
) -> None:
    sink = Sink()
    env = {"MAX_DELIVERIES": str(DELIVERIES), "LEASE_SECONDS": "1"}
    try:
        with suite(redis_srv, schedulers=1, executors=1, **env) as s:
            task = s.create("crashy", once_in(1), http(sink.url("/hang")))
            executor = s.processes[0]
            for delivery in range(1, DELIVERIES + 1):
                wait_for(lambda n=delivery: sum(sink.counts().values()) == n, 20)
                executor.send_signal(signal.SIGKILL)  # lost mid-attempt
                executor.wait(5)
                executor = s.start_executor(s.executor_ports[0], **env)  # the same address
                s.processes.remove(executor)  # started last: keep the executor first in the list
                s.processes.insert(0, executor)

            def failed() -> bool:
                [run] = s.executions(task.id)
                return run.status == pb.ExecutionStatus.EXECUTION_STATUS_FAILED

            wait_for(failed, 20)
            [run] = s.executions(task.id)
            assert f"lost its executor {DELIVERIES} times" in run.status_message
            time.sleep(2.5)  # longer than a lease: nothing delivers it again
            assert sum(sink.counts().values()) == DELIVERIES
    finally:
        sink.close()
