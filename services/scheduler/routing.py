"""Routing (docs/engine.md, "Routing"): which executor stream each leased execution goes on.

Pure: the dispatcher gives the credits each stream holds and which streams run command targets,
and gets back a batch per stream and what no stream had room for. Command work goes only to
streams that run it, before anything else, within their credits; the rest of it is parked (set
aside in the command ready queue, so it never stands in front of other work). Everything else
fills the credits left on any stream, the stream with most room first.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass
class Routes(Generic[K, T]):
    batches: dict[K, list[T]]  # per stream, in the order the streams were given
    park: list[T]  # command work no stream that runs it had a credit for
    back: list[T]  # other work no stream had a credit for


def route(
    items: Sequence[T], room: Mapping[K, int], capable: Sequence[K], is_command: Callable[[T], bool]
) -> Routes[K, T]:
    """Split `items` over the streams of `room` (credits each holds); `capable`: the streams
    that run command targets."""
    command = [i for i in items if is_command(i)]
    others = [i for i in items if not is_command(i)]
    left = dict(room)
    batches: dict[K, list[T]] = {stream: [] for stream in room}
    for stream in capable:
        take, command = command[: left[stream]], command[left[stream] :]
        batches[stream] += take
        left[stream] -= len(take)
    for stream in sorted(room, key=lambda s: -left[s]):
        take, others = others[: left[stream]], others[left[stream] :]
        batches[stream] += take
        left[stream] -= len(take)
    return Routes(batches, command, others)
