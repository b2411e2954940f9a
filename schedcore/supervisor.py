"""Several server processes of one service behind one port (the api's API_PROCESSES).

One Python process runs one event loop on one core; a pod with more cores serves more calls only
with more processes. The parent starts `count` children (multiprocessing's spawn: fresh
interpreters, no state inherited from the parent); each builds its own service (event loop, Redis
pool) and binds the same port with SO_REUSEPORT, and the kernel spreads new connections over them.

The parent serves nothing. SIGTERM or SIGINT is forwarded to every child, each drains as a single
process does (health NOT_SERVING, grace, close), and the parent exits when all have: 0 when each
exited 0, else 1. A child that exits on its own (crash, kill -9, a port it cannot bind) is not
restarted: the parent drains the others and exits 1, so the kubelet restarts the container with
its back-off and counts the restart where operators look (docs/configuration.md says why).
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a pod's
    CPU limit), rounded up."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 file here, or one we cannot read: affinity alone
        pass
    return cpus


def process_count(requested: int) -> int:
    """API_PROCESSES as a number of processes: 0 means one per available core."""
    return requested or available_cpus()


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to send this child SIGTERM (a drain) when the parent dies, so a parent killed
    with -9 leaves no server behind on the port."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def supervise(name: str, count: int, child: Callable[[int, int], None]) -> int:
    """Run `child(index, parent_pid)` in `count` processes until they have all exited; the exit
    status for the parent (0: every child drained and exited 0)."""
    ctx = multiprocessing.get_context("spawn")
    parent_pid = os.getpid()
    children = [
        ctx.Process(target=child, args=(index, parent_pid), name=f"{name}-{index}") for index in range(count)
    ]
    stopping = False

    def stop(signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for process in children:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for process in children:
        if not stopping:
            process.start()
    log.info("%s: %d server processes", name, count, extra={"pids": [p.pid for p in children]})
    if stopping:
        stop()  # a signal that came while children were starting
    failed = False
    running = {process.sentinel: process for process in children if process.pid is not None}
    while running:
        for sentinel in multiprocessing.connection.wait(list(running)):
            assert isinstance(sentinel, int)  # wait() returns the sentinels it was given
            process = running.pop(sentinel)
            process.join()
            # A child stopped before it set up its own handlers dies of the SIGTERM: it served
            # nothing yet, so that counts as a clean stop.
            clean = stopping and process.exitcode in (0, -signal.SIGTERM)
            if clean:
                continue
            failed = True
            log.error(
                "%s exited unexpectedly; stopping the others",
                process.name,
                extra={"pid": process.pid, "exitcode": process.exitcode},
            )
            stop()
    log.info("%s: all server processes stopped", name, extra={"failed": failed})
    return 1 if failed else 0
