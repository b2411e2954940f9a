"""The target kinds, keyed by the name of their field in the Target oneof.

A new kind is one module with a Target subclass and one line here; the dispatch path does not
change.
"""

from __future__ import annotations

from services.executor.targets.base import AttemptContext, Outcome, Target
from services.executor.targets.http import HttpTarget
from services.executor.targets.log import LogTarget

REGISTRY: dict[str, type[Target]] = {
    "log": LogTarget,
    "http": HttpTarget,
}

__all__ = ["REGISTRY", "AttemptContext", "Outcome", "Target"]
