"""Scenario 6: schedulers whose clocks are wrong by minutes (libfaketime shifts the wall clock
each one reads) neither fire early nor twice: due-ness is decided by Redis' TIME."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.faults import workload
from tests.faults.checker import audit
from tests.faults.cluster import cluster, libfaketime
from tests.faults.conftest import Recorder
from tests.faults.scenario import LEASE_S, SLACK_S, TIMEOUT

pytestmark = TIMEOUT
SKEW_S = 180


def skewed(offset_s: int) -> dict[str, str]:
    return {
        "LD_PRELOAD": libfaketime(),
        "FAKETIME": f"{offset_s:+d}s",
        # only the wall clock is wrong, as with a badly synchronized host
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def seen_offset(env: dict[str, str]) -> float:
    """What a process started with `env` reads as the time, minus the true time."""
    out = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout) - time.time()


def test_6_schedulers_with_wrong_clocks_fire_neither_early_nor_twice(figures: Recorder) -> None:
    ahead, behind = skewed(SKEW_S), skewed(-SKEW_S)
    # the injection is real: a process under it reads a clock minutes off
    assert abs(seen_offset(ahead) - SKEW_S) < 5
    assert abs(seen_offset(behind) + SKEW_S) < 5
    with cluster(scheduler_env=[ahead, behind]) as c:
        w = workload.build(c, figures.scale)
        fig = audit(c, w, "6 scheduler clocks +/-3 min", bound_s=LEASE_S + SLACK_S)
        fig.notes = (
            f"scheduler-0 runs {SKEW_S} s ahead, scheduler-1 {SKEW_S} s behind (libfaketime); "
            "no record fired before its time, no sink call before it"
        )
    figures(fig)
