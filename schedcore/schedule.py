"""Fire times of schedules: one-time, every fixed interval from an anchor, or cron in an IANA time
zone, with the DST rules below (an interval is real time: DST does not touch it).

croniter matches expressions against wall-clock (naive) local times; this module maps wall-clock
times to instants itself, one UTC-offset segment at a time, because croniter's own handling of
aware datetimes fires a pinned time twice in the repeated hour of a fall-back transition.

DST rules (docs/scheduling.md states them for users; tests/unit/test_schedule.py proves them
against real tz-database transitions):
- Spring forward (a wall-clock hour does not exist, e.g. 02:00-03:00 in Europe/Berlin):
  a task with a fixed hour (`30 2 * * *`) runs once, at the end of the gap (03:00 local);
  a task with a wildcard hour (`*/15 * * * *`, `0 * * * *`) has no occurrence in the gap and
  keeps its real-time cadence.
- Fall back (a wall-clock hour repeats, e.g. 02:00-03:00 in Europe/Berlin):
  a task with a fixed hour runs once, in the first pass of the repeated hour (never in the
  second, even when its next run is computed from an instant inside the second pass);
  a task with a wildcard hour runs in both passes, keeping its real-time cadence.
This is the rule Vixie cron follows. The hour field is "wildcard" when it starts with `*`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from schedcore import pb
from schedcore.errors import quote
from schedcore.timeutil import ts_to_ms

MAX_EXPRESSION_LENGTH = 256
# Bounds of an interval schedule's period (ms): a second (the engine's finest cadence, as cron's
# seconds field) to a leap year.
MIN_INTERVAL_MS = 1_000
MAX_INTERVAL_MS = 366 * 24 * 3600 * 1000
# Most a task's max_jitter may be (ms).
MAX_JITTER_MS = 3_600_000
_WILDCARD_HOUR_MACROS = {"@hourly"}
_PINNED_MACROS = {"@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}
_TICK = timedelta(microseconds=1)
# Longer than any DST shift in the tz database (at most 2 h).
_REPEAT_LOOKBACK = timedelta(hours=3)
# How far ahead a single next-time search may look before calling the schedule exhausted.
_HORIZON = timedelta(days=366 * 5)


def jitter_ms(task_id: str, nominal_ms: int, max_ms: int) -> int:
    """The delay (0 to max_ms, inclusive) of the task's occurrence at nominal_ms: from a hash of
    both, so every scheduler replica and PreviewSchedule compute the same (docs/scheduling.md,
    "Jitter")."""
    if max_ms <= 0:
        return 0
    digest = hashlib.blake2b(f"{task_id}:{nominal_ms}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (max_ms + 1)


class ScheduleError(ValueError):
    """The expression or time zone cannot be used; the message says why."""


def load_zone(name: str) -> ZoneInfo:
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"unknown IANA time zone {quote(name)}") from None


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    # zone.utcoffset(instant) would read the instant's digits as local wall time: convert first.
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None  # an aware datetime in a ZoneInfo always has an offset
    return offset


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression evaluated in a time zone."""

    expression: str
    zone: ZoneInfo
    wildcard_hour: bool

    @classmethod
    def parse(cls, expression: str, time_zone: str = "UTC") -> Cron:
        """Parse and check an expression. Cached: a Cron is immutable, and bulk imports and the
        scheduler meet the same few expressions over and over."""
        return _parse(expression, time_zone)

    @classmethod
    def _parse(cls, expression: str, time_zone: str) -> Cron:
        expression = " ".join(expression.split())
        if not expression:
            raise ScheduleError("must not be empty")
        if len(expression) > MAX_EXPRESSION_LENGTH:
            raise ScheduleError(f"longer than {MAX_EXPRESSION_LENGTH} characters")
        zone = load_zone(time_zone)
        if expression.startswith("@"):
            macro = expression.lower()
            if macro not in _WILDCARD_HOUR_MACROS | _PINNED_MACROS:
                raise ScheduleError(f"unknown macro {quote(expression)}")
            wildcard = macro in _WILDCARD_HOUR_MACROS
            expression = macro
        else:
            fields = expression.split(" ")
            if len(fields) not in (5, 6):
                raise ScheduleError(
                    f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 "
                    f"(with seconds last), got {len(fields)}"
                )
            wildcard = fields[1].startswith("*")
        try:
            if not croniter.is_valid(expression):
                raise ScheduleError(f"{quote(expression)} is not a valid cron expression")
            # An expression that never matches a date (30 February) fails here.
            croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError:
            raise ScheduleError(f"{quote(expression)} never matches a date") from None
        except (CroniterBadCronError, CroniterError, ValueError, KeyError) as exc:
            raise ScheduleError(f"{quote(expression)} is not a valid cron expression: {exc}") from None
        return cls(expression, zone, wildcard)

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire instant strictly after `after` (aware), or None within the horizon.

        Works one UTC-offset segment at a time: inside a segment wall clock and UTC differ by a
        constant, so croniter's wall-clock answer maps straight to an instant. When the answer
        lies past the segment's end, the DST rules decide where matching resumes.
        """
        t = after.astimezone(UTC)
        offset = _offset(self.zone, t)
        wall_from = t.replace(tzinfo=None) + offset
        if not self.wildcard_hour:
            # Starting inside the second pass of a repeated hour: a fixed hour had its chance in
            # the first pass, so matching resumes where the repeated wall times end.
            earlier = t - _REPEAT_LOOKBACK
            earlier_offset = _offset(self.zone, earlier)
            if earlier_offset > offset:
                change = self._first_change(earlier, t, earlier_offset)
                if change is not None:
                    repeat_end = change.replace(tzinfo=None) + earlier_offset
                    wall_from = max(wall_from, repeat_end - _TICK)
        limit = t + _HORIZON
        while t < limit:
            wall: datetime = croniter(self.expression, wall_from).get_next(datetime)
            instant = (wall - offset).replace(tzinfo=UTC)
            change = self._first_change(t, instant, offset)
            if change is None:
                return instant
            new_offset = _offset(self.zone, change)
            wall_old = change.replace(tzinfo=None) + offset  # the wall clock jumps from here
            wall_new = change.replace(tzinfo=None) + new_offset  # ...to here
            if new_offset > offset:
                # Spring forward: wall times in [wall_old, wall_new) do not exist.
                if wall < wall_new and not self.wildcard_hour:
                    return change
                wall_from = wall_new - _TICK
            else:
                # Fall back: wall times in [wall_new, wall_old) happen twice. A fixed hour
                # already had its chance in the first pass; a wildcard hour runs again.
                wall_from = (wall_new if self.wildcard_hour else wall_old) - _TICK
            t, offset = change, new_offset
        return None

    def _first_change(self, low: datetime, high: datetime, offset: timedelta) -> datetime | None:
        """The first instant in (low, high] whose UTC offset is not `offset`, to the second."""
        step = timedelta(days=7)
        probe = low
        while True:
            nxt = min(probe + step, high)
            if _offset(self.zone, nxt) != offset:
                break
            if nxt >= high:
                return None
            probe = nxt
        lo, hi = int(probe.timestamp()), int(nxt.timestamp())
        if _offset(self.zone, datetime.fromtimestamp(lo, UTC)) != offset:
            return datetime.fromtimestamp(lo, UTC) if lo > low.timestamp() else probe
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _offset(self.zone, datetime.fromtimestamp(mid, UTC)) == offset:
                lo = mid
            else:
                hi = mid
        return datetime.fromtimestamp(hi, UTC)


@lru_cache(maxsize=4096)
def _parse(expression: str, time_zone: str) -> Cron:
    return Cron._parse(expression, time_zone)


@lru_cache(maxsize=16384)
def _cron_next_ms(cron: Cron, after_ms: int) -> int | None:
    """Cron.next_after in ms, cached: croniter costs ~100 us a call, and tasks sharing an
    expression and zone come due together, so the scheduler asks the same question for each
    of them (1,000 every-second tasks: 1,000 times a second)."""
    found = cron.next_after(datetime.fromtimestamp(after_ms / 1000, UTC))
    return None if found is None else round(found.timestamp() * 1000)


@dataclass(frozen=True)
class Window:
    """A schedule reduced to what the engine needs: the next fire time after an instant (ms)."""

    cron: Cron | None = None
    once_ms: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    every_ms: int | None = None  # an interval: start_ms + k * every_ms (start_ms is then set)

    @classmethod
    def of(cls, schedule: pb.Schedule) -> Window:
        """The Window of a valid schedule (stored, or normalized by the api's validation): the
        one conversion, its cron parsed through Cron.parse's cache. No zone reads as UTC."""
        kind = schedule.WhichOneof("kind")
        if kind == "once":
            return cls(once_ms=ts_to_ms(schedule.once.run_time))
        if kind == "interval":
            interval = schedule.interval
            return cls(
                every_ms=interval.every.ToMilliseconds(),
                start_ms=ts_to_ms(interval.start_time),
                end_ms=ts_to_ms(interval.end_time) if interval.HasField("end_time") else None,
            )
        cron = schedule.cron
        return cls(
            cron=Cron.parse(cron.expression, cron.time_zone or "UTC"),
            start_ms=ts_to_ms(cron.start_time) if cron.HasField("start_time") else None,
            end_ms=ts_to_ms(cron.end_time) if cron.HasField("end_time") else None,
        )

    def next_after_ms(self, after_ms: int) -> int | None:
        """First fire time strictly after `after_ms`, or None when the schedule has no more."""
        if self.once_ms is not None:
            return self.once_ms if self.once_ms > after_ms else None
        if self.start_ms is not None and after_ms < self.start_ms:
            after_ms = self.start_ms - 1
        if self.every_ms is not None:
            assert self.start_ms is not None
            ms: int | None = after_ms + self.every_ms - (after_ms - self.start_ms) % self.every_ms
        else:
            assert self.cron is not None
            ms = _cron_next_ms(self.cron, after_ms)
        if ms is None:
            return None
        if self.end_ms is not None and ms > self.end_ms:
            return None
        return ms

    def last_in(self, low_ms: int, high_ms: int) -> int | None:
        """The latest fire time in [low_ms, high_ms], or None. Looks back from high_ms over
        doubling spans (no schedule kind computes backwards), then walks forward inside the first
        span that holds one: a handful of steps for a frequent schedule, about 40 for a yearly."""
        span = 1000
        while True:
            start = max(low_ms, high_ms - span)
            found = self.next_after_ms(start - 1)
            if found is not None and found <= high_ms:
                while (after := self.next_after_ms(found)) is not None and after <= high_ms:
                    found = after
                return found
            if start == low_ms:
                return None
            span *= 2

    def preview_ms(self, after_ms: int, count: int) -> list[int]:
        times: list[int] = []
        current = after_ms
        while len(times) < count:
            nxt = self.next_after_ms(current)
            if nxt is None:
                break
            times.append(nxt)
            current = nxt
        return times
