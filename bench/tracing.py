"""`python -m bench.tracing [N]`: what tracing costs per execution (docs/tracing.md, "What it
costs"), without the services: the span calls the scheduler and the executor make, on N
executions (default 20,000) in batches of 500, timed in CPU seconds of this process (the
batch processor's export thread included: encoding and sending the spans) against the same
loop with tracing off. The spans go over OTLP/gRPC to a receiver in another process (its CPU
is not counted). Prints a table and one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

from schedcore import ipb, pb, tracing
from schedcore.settings import Settings
from schedcore.store.engine import Completion, DispatchItem

BATCH = 500
RECEIVER = (
    "import sys, time; from tests.otlp_receiver import OtlpReceiver; r = OtlpReceiver(); "
    "print(r.port, flush=True); time.sleep(3600)"
)


def records(n: int, start: int) -> list[pb.Execution]:
    out = []
    for i in range(start, start + n):
        record = pb.Execution(id=f"{i:08x}-1700000000000", task_id=f"{i:08x}", attempt=1)
        if tracing.ENABLED:
            tracing.stamp(record)
        out.append(record)
    return out


def scheduler_side(n: int) -> None:
    """Per batch: the fire's root spans, the dispatch spans (traceparents into the work items),
    the record spans: what one execution costs the schedulers."""
    for start in range(0, n, BATCH):
        batch = records(BATCH, start)
        t0 = time.time_ns()
        if tracing.ENABLED:
            from schedcore import spans

            spans.roots("execution.fire", batch, t0)
        work = [ipb.WorkItem(execution_id=r.id, task_id=r.task_id, lease_token=1, attempt=1) for r in batch]
        tracing.dispatched([DispatchItem(r, 1, None) for r in batch], work, "10.0.0.7:50053")
        tracing.recorded([(r, Completion(r, 1, None, None)) for r in batch], [True] * len(batch), t0)


def executor_side(n: int) -> None:
    """Per attempt: its span and its http call's span (with the traceparent header)."""
    parent = f"00-{'1' * 32}-{'2' * 16}-01" if tracing.ENABLED else ""
    for i in range(n):
        item = ipb.WorkItem(execution_id=f"{i:08x}-1700000000000", attempt=1, traceparent=parent)
        item.target.http.url = "http://target.example:8080/hook"
        with tracing.attempt(item) as span:
            headers = {"Idempotency-Key": item.execution_id}
            with tracing.http_call("POST", item.target.http.url, headers) as call:
                if call is not None:
                    tracing.http_ended(call, True, "", 200)
            if span is not None:
                tracing.attempt_ended(span, pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED, "")


def cpu_us_per(n: int, run: Callable[[int], None]) -> float:
    started = time.process_time()
    run(n)
    if tracing.ENABLED:
        from schedcore import spans

        assert spans._State.provider is not None
        spans._State.provider.force_flush(60_000)  # the export thread's work counts too
    return (time.process_time() - started) / n * 1e6


SIDES = (("scheduler", scheduler_side), ("executor", executor_side))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        off = {name: cpu_us_per(n, run) for name, run in SIDES}
        # A queue that holds every span made: none dropped (docs/tracing.md), all counted.
        os.environ.setdefault("OTEL_BSP_MAX_QUEUE_SIZE", str(6 * n))
        settings = Settings(otel_endpoint=f"http://127.0.0.1:{port}", instance_id="bench")
        tracing.configure("scheduler", settings)
        on = {name: cpu_us_per(n, run) for name, run in SIDES}
        tracing._bound = tracing.bound_for(0.0)  # on, nothing sampled: the decision alone
        stamp_only = cpu_us_per(n, scheduler_side)
        tracing.shutdown()
    finally:
        receiver.kill()
    figures = {
        "executions": n,
        "scheduler_off_us": round(off["scheduler"], 1),
        "scheduler_on_us": round(on["scheduler"], 1),
        "scheduler_on_unsampled_us": round(stamp_only, 1),
        "executor_off_us": round(off["executor"], 1),
        "executor_on_us": round(on["executor"], 1),
    }
    print("CPU microseconds per execution (the loop's own work included; on minus off is tracing's)")
    print(f"  schedulers (fire, dispatch, record): off {off['scheduler']:.1f}, on {on['scheduler']:.1f}")
    print(f"  schedulers, on but not sampled (ratio 0): {stamp_only:.1f}")
    print(f"  executor (attempt + http spans): off {off['executor']:.1f}, on {on['executor']:.1f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
