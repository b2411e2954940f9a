"""Parsing flag values: durations, instants, key=value pairs, JSON and file arguments.

Each raises UsageError with a message that names the flag."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from cli.errors import UsageError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(flag: str, text: str) -> int:
    """`1.5` (seconds), `250ms`, `30s`, `5m`, `2h`, `1d`, or a sum such as `1h30m`."""
    raw = text.strip().lower()
    try:
        return round(float(raw) * 1000)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(raw):
        raise UsageError(f"{flag}: expected a duration such as 30s, 250ms, 5m, 1h30m, got {text!r}")
    return round(total)


def duration(flag: str, text: str) -> Duration:
    ms = duration_ms(flag, text)
    return Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def instant(flag: str, text: str) -> Timestamp:
    """ISO 8601 with an offset (`2026-12-01T09:00:00Z`, `...+01:00`), or `+DURATION` from now."""
    raw = text.strip()
    if raw.startswith("+"):
        ms = int(time.time() * 1000) + duration_ms(flag, raw[1:])
        return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(
            f"{flag}: expected ISO 8601 such as 2026-12-01T09:00:00Z, or +DURATION such as +30s, got {text!r}"
        ) from None
    if when.tzinfo is None:
        raise UsageError(f"{flag}: {text!r} has no offset: add Z (UTC) or one such as +01:00")
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def since(flag: str, text: str) -> Timestamp:
    """An instant, or a duration back from now (`10m`)."""
    if text[:1].isdigit() and not text[:4].isdigit():  # "10m", not "2026-..."
        ms = int(time.time() * 1000) - duration_ms(flag, text)
        return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)
    return instant(flag, text)


def pairs(flag: str, items: list[str], sep: str = "=") -> dict[str, str]:
    out = {}
    for item in items:
        key, found, value = item.partition(sep)
        if not found or not key.strip():
            raise UsageError(f"{flag}: expected KEY{sep}VALUE, got {item!r}")
        out[key.strip()] = value.strip() if sep == ":" else value
    return out


def read_arg(flag: str, text: str) -> str:
    """The text itself, or the contents of a file for `@path` (`@-`: standard input)."""
    if not text.startswith("@"):
        return text
    path = text[1:]
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read {path}: {exc.strerror}") from None


def struct(flag: str, text: str) -> Struct:
    raw = read_arg(flag, text)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag}: expected a JSON object, got {type(value).__name__}")
    out = Struct()
    out.update(value)
    return out


def message_from_json(flag: str, text: str, message: Message) -> None:
    """Fill `message` from protobuf JSON (a file for `@path` or a path)."""
    raw = read_arg(flag, text if text.startswith("@") else f"@{text}")
    try:
        json_format.Parse(raw, message)
    except json_format.ParseError as exc:
        raise UsageError(f"{flag}: not a valid {message.DESCRIPTOR.name} in protobuf JSON: {exc}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:  # also NaN
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value
