"""Free appointment slots for one doctor, computed purely (no database, no I/O, no clock).

Everything here is a function of its arguments; the current time is the ``now`` parameter.
All returned instants are timezone-aware: ``starts_at``/``ends_at`` and working intervals are
in UTC, ``Slot.local_start`` is in the doctor's zone.

Decisions on the edge cases (these are promises; the tests pin each one down):

Working hours
    * A local date ``d`` contributes the weekly windows of ``d.weekday()``. An ``"off"``
      override without times drops those weekly windows for the whole date; an ``"off"`` with
      times cuts that part out of them (a window may be split in two). ``"extra"`` overrides
      are added *after* the cuts, so extra hours win over an ``"off"`` on the same date
      ("off all day, but I will do 18:00-20:00" means exactly that).
    * Overlapping **and touching** windows are merged into one working interval, so
      09:00-12:00 plus an extra 12:00-13:00 is a single 09:00-13:00 interval.
    * Every computation after the local-to-UTC conversion is done in UTC. (Python compares and
      adds aware datetimes that share a tzinfo by wall clock, ignoring ``fold``; UTC avoids it.)

Local wall-clock bounds and DST (resolved with :mod:`zoneinfo`, per date)
    A local interval ``[start, end)`` on date ``d`` becomes the *smallest* single UTC interval
    that contains every instant whose wall-clock reading on ``d`` lies in ``[start, end)``:

    * a bound that exists once maps to that instant;
    * a bound in the spring-forward gap (it never appears on a clock) maps to the transition
      instant, i.e. to the first real time after the gap. A Europe/Berlin window 02:00-04:00
      on 2026-03-29 therefore starts at 03:00 CEST and lasts one real hour; a window lying
      wholly inside the gap is empty;
    * a start in the repeated fall-back hour maps to its first occurrence; an end in the
      repeated hour maps to its second occurrence, except an end exactly at the start of the
      repeated hour (02:00 in Berlin on 2026-10-25), which maps to the first occurrence,
      because nothing after that instant reads earlier than 02:00. So a window spanning the
      repeated hour lasts one real hour longer, and ``"off"`` cuts obey the same rule.

Slots
    * Candidates are laid on a grid anchored at each working interval's start (after merging
      and after ``"off"`` cuts, so the grid restarts where the doctor comes back):
      ``start + k * (slot_length + buffer)`` for ``k = 0, 1, ...``, stepping in absolute time.
      A candidate needs ``start + slot_length <= interval end``; its trailing buffer may run
      past the end. Because the grid restarts each day, a 09:00 slot stays 09:00 local on both
      sides of a DST change (its UTC time shifts by the change). Because it steps in real time,
      no slot has a local start inside a gap, and the repeated hour's slots are offered twice
      with different UTC offsets (``local_start`` shows which), never twice at one UTC instant.
    * Busy intervals do **not** move the grid: a booking just blocks the grid points it hits.
      ``busy`` intervals already include their trailing buffer; a candidate blocks
      ``[s, s + slot_length + buffer)`` and is free only if that half-open range overlaps no
      busy interval (as in the database's exclusion constraint on
      ``tstzrange(starts_at, buffer_ends_at)``). Busy intervals may overlap each other.
    * Kept: ``range_start <= s < range_end``, ``s >= now + min_notice`` and
      ``s <= now + horizon`` (both cut-offs inclusive). Output is sorted by ``starts_at``.

Validation
    ``ValueError`` for: naive datetimes, intervals with ``end <= start`` (range, busy,
    appointments), ``slot_length <= 0``, a negative ``buffer``/``min_notice``/``horizon``,
    a weekday outside 0..6, a window or override with ``end <= start`` or with tz-aware times,
    an ``"extra"`` override without times, an override with only one of start/end, and an
    override ``day`` given as a datetime. Dataclasses check themselves on construction.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, TypeAlias
from zoneinfo import ZoneInfo

__all__ = [
    "DateOverride",
    "Slot",
    "SlotRules",
    "WeeklyWindow",
    "free_slots",
    "outside_hours",
    "working_intervals",
]

Interval: TypeAlias = tuple[datetime, datetime]

# datetime's resolution; transitions are whole seconds, so a search at this step is exact.
_TICK = timedelta(microseconds=1)
_ONE_DAY = timedelta(days=1)
_ZERO = timedelta(0)


def _check_wall_time(value: time, name: str) -> None:
    if not isinstance(value, time):
        raise ValueError(f"{name} must be a datetime.time, got {value!r}")
    if value.tzinfo is not None:
        raise ValueError(f"{name} must be a local wall-clock time without tzinfo, got {value!r}")


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """A recurring working window on one weekday, in the doctor's local wall-clock time."""

    weekday: int  # 0 = Monday … 6 = Sunday (date.weekday())
    start: time
    end: time  # end > start: windows do not cross midnight

    def __post_init__(self) -> None:
        if isinstance(self.weekday, bool) or not isinstance(self.weekday, int):
            raise ValueError(f"weekday must be an int 0..6, got {self.weekday!r}")
        if not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday must be 0 (Monday) … 6 (Sunday), got {self.weekday}")
        _check_wall_time(self.start, "WeeklyWindow.start")
        _check_wall_time(self.end, "WeeklyWindow.end")
        if self.end <= self.start:
            raise ValueError(
                f"WeeklyWindow end {self.end} must be after start {self.start} "
                "(windows do not cross midnight)"
            )


@dataclass(frozen=True, slots=True)
class DateOverride:
    """A change to one local date: time off (whole day or part) or extra working hours."""

    day: date  # local date in the doctor's zone
    kind: Literal["off", "extra"]
    start: time | None = None  # None with kind="off" means the whole day off
    end: time | None = None  # "extra" always has start and end

    def __post_init__(self) -> None:
        if isinstance(self.day, datetime) or not isinstance(self.day, date):
            raise ValueError(f"DateOverride.day must be a date (not a datetime), got {self.day!r}")
        if self.kind not in ("off", "extra"):
            raise ValueError(f"DateOverride.kind must be 'off' or 'extra', got {self.kind!r}")
        if self.start is None and self.end is None:
            if self.kind == "extra":
                raise ValueError(f"an 'extra' override on {self.day} needs start and end times")
            return
        if self.start is None or self.end is None:
            raise ValueError(
                f"override on {self.day} needs both start and end, or neither (whole day off)"
            )
        _check_wall_time(self.start, "DateOverride.start")
        _check_wall_time(self.end, "DateOverride.end")
        if self.end <= self.start:
            raise ValueError(
                f"override on {self.day}: end {self.end} must be after start {self.start}"
            )


@dataclass(frozen=True, slots=True)
class SlotRules:
    """How a doctor's slots are cut: zone, slot length, buffer, booking notice and horizon."""

    time_zone: ZoneInfo
    slot_length: timedelta  # e.g. 30 min
    buffer: timedelta  # free time after each appointment, e.g. 5 min
    min_notice: timedelta  # no slot may start sooner than now + min_notice
    horizon: timedelta  # no slot may start later than now + horizon

    def __post_init__(self) -> None:
        if not isinstance(self.time_zone, ZoneInfo):
            raise ValueError(f"time_zone must be a zoneinfo.ZoneInfo, got {self.time_zone!r}")
        if self.slot_length <= _ZERO:
            raise ValueError(f"slot_length must be positive, got {self.slot_length}")
        if self.buffer < _ZERO:
            raise ValueError(f"buffer must not be negative, got {self.buffer}")
        if self.min_notice < _ZERO:
            raise ValueError(f"min_notice must not be negative, got {self.min_notice}")
        if self.horizon < _ZERO:
            raise ValueError(f"horizon must not be negative, got {self.horizon}")


@dataclass(frozen=True, slots=True)
class Slot:
    """A bookable slot: UTC bounds plus the local start (whose offset disambiguates DST)."""

    starts_at: datetime  # aware, UTC
    ends_at: datetime  # aware, UTC (starts_at + slot_length)
    local_start: datetime  # aware, in rules.time_zone


# --- validation helpers -------------------------------------------------------------------


def _to_utc(value: datetime, name: str) -> datetime:
    """Return ``value`` as a UTC datetime; raise ValueError if it is not an aware datetime."""
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")
    return value.astimezone(UTC)


def _checked_interval(pair: tuple[datetime, datetime], name: str) -> Interval:
    start, end = pair
    start_utc = _to_utc(start, f"{name} start")
    end_utc = _to_utc(end, f"{name} end")
    if end_utc <= start_utc:
        raise ValueError(f"{name}: end {end!r} must be after start {start!r}")
    return start_utc, end_utc


def _checked_range(range_start: datetime, range_end: datetime) -> Interval:
    start = _to_utc(range_start, "range_start")
    end = _to_utc(range_end, "range_end")
    if end <= start:
        raise ValueError(f"range_end {range_end!r} must be after range_start {range_start!r}")
    return start, end


# --- local wall clock -> UTC ----------------------------------------------------------------


def _reads_before(instant: datetime, tz: ZoneInfo, day: date, wall: time) -> bool:
    """Whether the local clock at ``instant`` shows a moment earlier than ``day`` ``wall``."""
    local = instant.astimezone(tz)
    # Compare (date, time) tuples: naive times compare by reading, which is what we want.
    return (local.date(), local.time()) < (day, wall)


def _both_folds(day: date, wall: time, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC instants for ``wall`` on ``day`` read with the pre- and post-transition offsets."""
    local = datetime.combine(day, wall, tzinfo=tz)
    return local.replace(fold=0).astimezone(UTC), local.replace(fold=1).astimezone(UTC)


def _gap_end(before: datetime, after: datetime, tz: ZoneInfo, day: date, wall: time) -> datetime:
    """The transition instant of the gap holding ``wall``: first instant reading >= ``wall``.

    ``before`` reads earlier than ``wall`` and ``after`` reads later; bisect between them.
    """
    lo, hi = before, after
    while hi - lo > _TICK:
        mid = lo + (hi - lo) // 2
        if _reads_before(mid, tz, day, wall):
            lo = mid
        else:
            hi = mid
    return hi


def _start_instant(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """Earliest instant whose reading on ``day`` is at or after ``wall``."""
    first, second = _both_folds(day, wall, tz)
    if first <= second:  # exists once, or twice (then the first occurrence is earliest)
        return first
    # In a gap zoneinfo's fold=0 uses the earlier (smaller) offset, so first > second.
    return _gap_end(second, first, tz, day, wall)


def _end_instant(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """Latest instant up to which the reading on ``day`` stays earlier than ``wall``."""
    first, second = _both_folds(day, wall, tz)
    if first == second:
        return first
    if first > second:  # gap
        return _gap_end(second, first, tz, day, wall)
    # Repeated hour: the second occurrence, unless the moment just before it already reads
    # at/after ``wall`` (``wall`` is the very start of the repeated hour).
    return second if _reads_before(second - _TICK, tz, day, wall) else first


def _local_interval(day: date, start: time, end: time, tz: ZoneInfo) -> Interval:
    return _start_instant(day, start, tz), _end_instant(day, end, tz)


# --- interval algebra (UTC) -----------------------------------------------------------------


def _merge(intervals: list[Interval]) -> list[Interval]:
    """Sorted, disjoint, non-touching union of ``intervals``; empty ones are dropped."""
    merged: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[0] < i[1]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _subtract(base: list[Interval], cuts: list[Interval]) -> list[Interval]:
    """``base`` minus ``cuts``; inputs are a few intervals of one day, so quadratic is fine."""
    pieces = base
    for cut_start, cut_end in cuts:
        pieces = [
            piece
            for start, end in pieces
            for piece in ((start, min(end, cut_start)), (max(start, cut_end), end))
            if piece[0] < piece[1]
        ]
    return pieces


def _day_intervals(
    day: date,
    tz: ZoneInfo,
    weekly_by_day: dict[int, list[WeeklyWindow]],
    overrides_by_day: dict[date, list[DateOverride]],
) -> list[Interval]:
    overrides = overrides_by_day.get(day, [])
    regular: list[Interval] = []
    if not any(o.kind == "off" and o.start is None for o in overrides):
        regular = [_local_interval(day, w.start, w.end, tz) for w in weekly_by_day[day.weekday()]]
        cuts = [
            _local_interval(day, o.start, o.end, tz)
            for o in overrides
            if o.kind == "off" and o.start is not None and o.end is not None
        ]
        regular = _subtract(_merge(regular), cuts)
    extras = [
        _local_interval(day, o.start, o.end, tz)
        for o in overrides
        if o.kind == "extra" and o.start is not None and o.end is not None
    ]
    return regular + extras


# --- public API -----------------------------------------------------------------------------


def working_intervals(
    *,
    rules: SlotRules,
    weekly: Sequence[WeeklyWindow],
    overrides: Sequence[DateOverride],
    range_start: datetime,
    range_end: datetime,
) -> list[Interval]:
    """UTC intervals when the doctor works, after overrides, sorted, merged, disjoint.

    Covers every local date (in ``rules.time_zone``) that touches ``[range_start,
    range_end)`` and is not clipped to the range: a day's intervals are returned whole.
    """
    start, end = _checked_range(range_start, range_end)
    tz = rules.time_zone
    weekly_by_day: dict[int, list[WeeklyWindow]] = defaultdict(list)
    for window in weekly:
        weekly_by_day[window.weekday].append(window)
    overrides_by_day: dict[date, list[DateOverride]] = defaultdict(list)
    for override in overrides:
        overrides_by_day[override.day].append(override)

    # Local dates are monotonic in time, so the touching dates run from the date of the first
    # instant of the range to the date of its last instant.
    day = start.astimezone(tz).date()
    last_day = (end - _TICK).astimezone(tz).date()
    intervals: list[Interval] = []
    while day <= last_day:
        intervals.extend(_day_intervals(day, tz, weekly_by_day, overrides_by_day))
        day += _ONE_DAY
    return _merge(intervals)


def free_slots(
    *,
    rules: SlotRules,
    weekly: Sequence[WeeklyWindow],
    overrides: Sequence[DateOverride],
    busy: Sequence[tuple[datetime, datetime]],
    range_start: datetime,
    range_end: datetime,
    now: datetime,
) -> list[Slot]:
    """Bookable slots starting in ``[range_start, range_end)``, sorted by ``starts_at``.

    ``busy`` holds booked appointments including their trailing buffer. See the module
    docstring for the grid, the cut-offs and the DST rules.
    """
    start, end = _checked_range(range_start, range_end)
    now_utc = _to_utc(now, "now")
    blocked = _merge([_checked_interval(b, f"busy[{i}]") for i, b in enumerate(busy)])
    blocked_starts = [b[0] for b in blocked]
    blocked_ends = [b[1] for b in blocked]

    tz = rules.time_zone
    step = rules.slot_length + rules.buffer  # > 0: slot_length is positive
    earliest = max(start, now_utc + rules.min_notice)
    latest = now_utc + rules.horizon  # inclusive
    slots: list[Slot] = []
    for window_start, window_end in working_intervals(
        rules=rules, weekly=weekly, overrides=overrides, range_start=start, range_end=end
    ):
        last_fit = window_end - rules.slot_length
        # Jump straight to the first grid point at or after `earliest` (ceil division).
        k = 0 if earliest <= window_start else -((window_start - earliest) // step)
        candidate = window_start + k * step
        while candidate <= last_fit and candidate < end and candidate <= latest:
            candidate_end = candidate + step
            # `blocked` is disjoint and sorted: the first interval ending after the candidate's
            # start is the only one that can overlap it.
            i = bisect_right(blocked_ends, candidate)
            if i == len(blocked) or blocked_starts[i] >= candidate_end:
                slots.append(
                    Slot(
                        starts_at=candidate,
                        ends_at=candidate + rules.slot_length,
                        local_start=candidate.astimezone(tz),
                    )
                )
            candidate = candidate_end
    return slots


def outside_hours(
    *,
    rules: SlotRules,
    weekly: Sequence[WeeklyWindow],
    overrides: Sequence[DateOverride],
    appointments: Sequence[tuple[datetime, datetime]],
) -> list[int]:
    """Indexes (ascending) of appointments ``(start, end)`` not wholly inside working hours.

    Only the appointment itself must fit; its trailing buffer may run past the end of hours,
    as for slots. Touching working intervals count as one, so an appointment may span them.
    """
    checked = [_checked_interval(a, f"appointments[{i}]") for i, a in enumerate(appointments)]
    if not checked:
        return []
    hours = working_intervals(
        rules=rules,
        weekly=weekly,
        overrides=overrides,
        range_start=min(a[0] for a in checked),
        range_end=max(a[1] for a in checked),
    )
    hour_starts = [h[0] for h in hours]
    flagged: list[int] = []
    for index, (appt_start, appt_end) in enumerate(checked):
        # The only candidate container is the last interval starting at or before the start.
        j = bisect_right(hour_starts, appt_start) - 1
        if j < 0 or hours[j][1] < appt_end:
            flagged.append(index)
    return flagged
