"""API_PROCESSES=0: how many cores the api's server processes get (schedcore/supervisor.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from schedcore.supervisor import available_cpus, process_count

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", AFFINITY),  # no CPU limit: the cores the process may run on
        ("50000 100000\n", 1),  # half a core rounds up to one
        ("150000 100000\n", min(AFFINITY, 2)),  # a limit of 1.5 cores: two processes
        ("100000000 100000\n", AFFINITY),  # a limit above the cores there are
        ("garbage\n", AFFINITY),
    ],
)
def test_cgroup_quota_caps_the_affinity(tmp_path: Path, cpu_max: str, expected: int) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert available_cpus(path) == expected


def test_no_cgroup_file_means_the_affinity(tmp_path: Path) -> None:
    assert available_cpus(tmp_path / "absent") == AFFINITY


def test_zero_means_one_per_core_and_any_other_count_is_kept() -> None:
    assert process_count(0) == available_cpus()
    assert process_count(3) == 3
