"""What the commands print: aligned tables and key/value details for people, protobuf JSON for
scripts (`--output json`; google.protobuf.json_format, field names in lowerCamelCase)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from schedcore import pb

ELLIPSIS = "…"


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def print_json(value: object, *, lines: bool = False) -> None:
    """One JSON document (indented), or one line per value for streams (`lines`)."""
    if lines:
        print(json.dumps(value, separators=(",", ":")), flush=True)
    else:
        print(json.dumps(value, indent=2))


def when(ts: Timestamp, present: bool = True) -> str:
    if not present:
        return "-"
    return datetime.fromtimestamp(ts.ToMilliseconds() / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def catch_up_text(catch_up: pb.CatchUp) -> str:
    """`earliest`, `all (up to 10)`, `latest, within 1h00m` (docs/scheduling.md)."""
    policy = pb.CatchUpPolicy.Name(catch_up.policy or pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_EARLIEST)
    text = policy.removeprefix("CATCH_UP_POLICY_").removeprefix("RUN_").lower().replace("_", "-")
    if catch_up.policy == pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_ALL:
        text += f" (up to {catch_up.limit or 10})"
    if catch_up.window.ToMilliseconds():
        text += f", within {span(catch_up.window)}"
    return text


def overlap_text(overlap: pb.Overlap) -> str:
    """`allow`, `skip (max 1)`, `cancel-other (max 2)`, `allow (max 3)` (docs/scheduling.md)."""
    policy = pb.OverlapPolicy.Name(overlap.policy or pb.OverlapPolicy.OVERLAP_POLICY_ALLOW)
    text = policy.removeprefix("OVERLAP_POLICY_").lower().replace("_", "-")
    limit = overlap.max_concurrent or (0 if text == "allow" else 1)
    return text + (f" (max {limit})" if limit else "")


def span(d: Duration, present: bool = True) -> str:
    if not present:
        return "-"
    ms = d.ToMilliseconds()
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    minutes, seconds = divmod(ms // 1000, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def short(text: str, width: int) -> str:
    text = " ".join(text.split())  # one line
    return text if len(text) <= width else text[: width - 1] + ELLIPSIS


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, file: Any = None) -> None:
    """Columns aligned on the widest cell; the last column is not padded."""
    rows = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)] + [row[-1]]
        print("  ".join(cells).rstrip(), file=file or sys.stdout)


def fixed(cells: Sequence[str], widths: Sequence[int]) -> str:
    """One row of fixed-width columns (for rows printed as they come); the last is free."""
    padded = [short(c, w).ljust(w) for c, w in zip(cells, widths, strict=False)]
    return "  ".join([*padded, *cells[len(widths) :]]).rstrip()


def details(pairs: Sequence[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in pairs) + 1
    for key, value in pairs:
        print(f"{key + ':':<{width}} {value}")


# --- names -------------------------------------------------------------------------------------


def state_name(state: int) -> str:
    return pb.TaskState.Name(state).removeprefix("TASK_STATE_").lower()


def status_name(status: int) -> str:
    return pb.ExecutionStatus.Name(status).removeprefix("EXECUTION_STATUS_").lower()


def schedule_text(schedule: pb.Schedule) -> str:
    kind = schedule.WhichOneof("kind")
    if kind == "once":
        return f"once at {when(schedule.once.run_time)}"
    if kind == "interval":
        interval = schedule.interval
        text = f"every {span(interval.every)} from {when(interval.start_time)}"
        if interval.HasField("end_time"):
            text += f" until {when(interval.end_time)}"
        return text
    if kind == "cron":
        cron = schedule.cron
        text = f"cron {cron.expression!r} {cron.time_zone or 'UTC'}"
        if cron.HasField("start_time"):
            text += f" from {when(cron.start_time)}"
        if cron.HasField("end_time"):
            text += f" until {when(cron.end_time)}"
        return text
    return "-"


def target_text(target: pb.Target) -> str:
    kind = target.WhichOneof("kind")
    if kind == "http":
        method = target.http.method or pb.HttpMethod.HTTP_METHOD_POST
        return f"http {pb.HttpMethod.Name(method).removeprefix('HTTP_METHOD_')} {target.http.url}"
    if kind == "command":
        return f"command {target.command.program}"
    return kind or "-"


def json_text(message: Message) -> str:
    """Compact JSON of a message; whole numbers of a Struct (doubles) shown without `.0`."""

    def tidy(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        if isinstance(value, dict):
            return {k: tidy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [tidy(v) for v in value]
        return value

    return json.dumps(tidy(to_json(message)), separators=(", ", ": "))


def listing(
    fmt: str,
    key: str,
    items: Sequence[Message],
    more: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
) -> None:
    """A list command's output: JSON ({key: [...], nextPageToken}) or a table and a hint."""
    if fmt == "json":
        doc: dict[str, object] = {key: [to_json(m) for m in items]}
        if more:
            doc["nextPageToken"] = more
        print_json(doc)
        return
    table(headers, rows)
    if more:
        print(f"(more: --all, or --page-token {more})")
