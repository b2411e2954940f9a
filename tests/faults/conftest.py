"""Figures of the fault scenarios: each scenario records one row; the session prints the table
and, when FAULTS_REPORT names a file, writes the rows there as JSON (`make faults` does)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import scale as scales
from tests.faults.checker import Figures

ROWS: list[Figures] = []
COLUMNS = (
    "scenario",
    "due",
    "executions",
    "lost",
    "duplicates",
    "re-runs",
    "skipped",
    "overlap-skipped",
    "slowest (s)",
)


class Recorder:
    def __init__(self) -> None:
        self.scale = scales.current()

    def __call__(self, fig: Figures) -> None:
        """Keep the row, then fail the scenario if the audit found anything."""
        ROWS.append(fig)
        shown = "\n".join(fig.problems[:30])
        more = f"\n... and {len(fig.problems) - 30} more" if len(fig.problems) > 30 else ""
        assert not fig.problems, f"{fig.scenario}: {len(fig.problems)} problems\n{shown}{more}"
        assert fig.lost == 0 and fig.duplicates == 0


@pytest.fixture()
def figures() -> Iterator[Recorder]:
    yield Recorder()


def table(rows: list[Figures]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " | notes |", "|" + "---|" * (len(COLUMNS) + 1)]
    for f in sorted(rows, key=lambda r: r.scenario):
        cells = (
            f.scenario,
            f.due,
            f.executions,
            f.lost,
            f.duplicates,
            f.reruns,
            f.skipped,
            f.overlapped,
            f.slowest_s,
        )
        lines.append("| " + " | ".join(str(c) for c in cells) + f" | {f.notes} |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    scale = scales.current()
    terminalreporter.section(f"fault scenarios ({scale.name} form)")
    terminalreporter.write_line(table(ROWS))
    path = os.environ.get("FAULTS_REPORT")
    if path:
        report = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.uname().system} {platform.uname().release} {platform.machine()}, "
            f"{os.cpu_count()} cores",
            "scale": dataclasses.asdict(scale),
            "rows": [dataclasses.asdict(r) | {"problems": r.problems[:30]} for r in ROWS],
            "table": table(ROWS),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2))
        terminalreporter.write_line(f"figures written to {path}")
