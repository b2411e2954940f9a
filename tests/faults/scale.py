"""The size knob: FAULTS_SCALE=short (default; CI) or long (`make faults`, the issue's sizes)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    name: str
    one_time: int  # one-time tasks spread over the window
    cron: int  # every-second cron tasks across the window
    window_s: int  # seconds between the first and the last occurrence
    outage_s: float  # how long a service or Redis stays down
    examples: int  # hypothesis examples per api property
    soak_tasks: int  # scenario 9: every-second cron tasks (log-free http to the sink)
    soak_executions: int  # scenario 9: executions to reach


SHORT = Scale("short", 300, 50, window_s=6, outage_s=4, examples=40, soak_tasks=200, soak_executions=3_000)
LONG = Scale("long", 2000, 50, window_s=20, outage_s=8, examples=400, soak_tasks=250, soak_executions=100_000)
SCALES = {"short": SHORT, "long": LONG}


def current() -> Scale:
    name = os.environ.get("FAULTS_SCALE", "short") or "short"
    if name not in SCALES:
        raise ValueError(f"FAULTS_SCALE: expected one of {sorted(SCALES)}, got {name!r}")
    return SCALES[name]
