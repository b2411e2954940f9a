"""Conversions between protobuf time types and integer milliseconds since the epoch (UTC).

The store and the engine count time in integer milliseconds: exact, compact and comparable in Lua.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

# Validation accepts instants from 1970 up to this one (2286-11-20): milliseconds then still fit
# the 13 digits that index members and execution ids pad to, so they sort by time.
MAX_MS = 10**13 - 1


def ts_to_ms(ts: Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def ts_fields(ms: int) -> dict[str, int]:
    """A Timestamp's constructor fields (seconds, nanos), for a message built with it in place:
    no Timestamp made only to be copied."""
    return {"seconds": ms // 1000, "nanos": (ms % 1000) * 1_000_000}


def ms_to_ts(ms: int) -> Timestamp:
    return Timestamp(**ts_fields(ms))


def duration_to_ms(d: Duration) -> int:
    return d.seconds * 1000 + d.nanos // 1_000_000


def ms_to_duration(ms: int) -> Duration:
    return Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)
