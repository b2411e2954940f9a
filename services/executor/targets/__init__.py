"""The target kinds, keyed by the name of their field in the Target oneof.

A new kind is one module with a Target subclass and one line here; the dispatch path does not
change.
"""

from __future__ import annotations

from schedcore.settings import Settings
from services.executor.targets.base import AttemptContext, Outcome, Target
from services.executor.targets.command import CommandTarget
from services.executor.targets.http import HttpTarget
from services.executor.targets.log import LogTarget

REGISTRY: dict[str, type[Target]] = {
    "log": LogTarget,
    "http": HttpTarget,
}
# Kinds an executor runs only when its settings enable them; it announces them to schedulers
# (ExecuteResponse.capabilities), which route such work only to it.
OPTIONAL: dict[str, type[Target]] = {
    "command": CommandTarget,
}


def enabled(settings: Settings) -> dict[str, type[Target]]:
    """The kinds this executor runs."""
    kinds = dict(REGISTRY)
    if settings.executor_command_targets:
        kinds.update(OPTIONAL)
    return kinds


__all__ = ["OPTIONAL", "REGISTRY", "AttemptContext", "Outcome", "Target", "enabled"]
