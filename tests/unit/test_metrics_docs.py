"""docs/metrics.md has a table row for every metric schedcore/metrics.py defines, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from schedcore import metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_every_metric_has_a_row_and_every_row_a_metric() -> None:
    defined = set()
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():  # a counter's family drops its _total
                defined.add(family.name + ("_total" if family.type == "counter" else ""))
    rows = set(re.findall(r"^\| `(tasksched_[a-z_]+)` \|", DOC.read_text(), re.MULTILINE))
    assert defined - rows == set(), "defined, not in a table of docs/metrics.md"
    assert rows - defined == set(), "in docs/metrics.md, not defined in schedcore/metrics.py"
