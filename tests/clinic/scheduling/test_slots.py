"""Tests for the pure free-slot computation in clinic.scheduling.slots."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from clinic.scheduling.slots import (
    DateOverride,
    Slot,
    SlotRules,
    WeeklyWindow,
    free_slots,
    outside_hours,
    working_intervals,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")

MONDAY = date(2026, 1, 5)  # a plain winter Monday, far from any DST change
LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)
MIN = timedelta(minutes=1)


def mins(n: int) -> timedelta:
    return timedelta(minutes=n)


def make_rules(
    tz: ZoneInfo = BERLIN,
    *,
    slot: int = 30,
    buffer: int = 0,
    notice: timedelta = timedelta(0),
    horizon: timedelta = timedelta(days=3650),
) -> SlotRules:
    return SlotRules(
        time_zone=tz,
        slot_length=mins(slot),
        buffer=mins(buffer),
        min_notice=notice,
        horizon=horizon,
    )


def local(tz: ZoneInfo, day: date, hour: int, minute: int = 0, *, fold: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=tz).replace(fold=fold)


def day_range(tz: ZoneInfo, first: date, last: date | None = None) -> tuple[datetime, datetime]:
    """Local midnight of ``first`` to local midnight after ``last`` (built, not added)."""
    end_day = (last or first) + timedelta(days=1)
    return local(tz, first, 0), local(tz, end_day, 0)


def every_day(start: time, end: time) -> list[WeeklyWindow]:
    return [WeeklyWindow(weekday=d, start=start, end=end) for d in range(7)]


def slots_for(
    first: date,
    weekly: Sequence[WeeklyWindow],
    *,
    rules: SlotRules | None = None,
    overrides: Sequence[DateOverride] = (),
    busy: Sequence[tuple[datetime, datetime]] = (),
    now: datetime = LONG_AGO,
    last: date | None = None,
) -> list[Slot]:
    rules = rules or make_rules()
    range_start, range_end = day_range(rules.time_zone, first, last)
    return free_slots(
        rules=rules,
        weekly=weekly,
        overrides=overrides,
        busy=busy,
        range_start=range_start,
        range_end=range_end,
        now=now,
    )


def hm(slots: Sequence[Slot]) -> list[str]:
    return [s.local_start.strftime("%H:%M") for s in slots]


def hmz(slots: Sequence[Slot]) -> list[str]:
    return [s.local_start.strftime("%H:%M%z") for s in slots]


def grid(start: str, count: int, step: int) -> list[str]:
    h, m = map(int, start.split(":"))
    first = h * 60 + m
    return [f"{(first + i * step) // 60:02d}:{(first + i * step) % 60:02d}" for i in range(count)]


TWO_WINDOWS = [
    WeeklyWindow(weekday=0, start=time(9), end=time(12)),
    WeeklyWindow(weekday=0, start=time(13), end=time(17)),
]
MORNING = [WeeklyWindow(weekday=0, start=time(9), end=time(12))]


# --- basics ---------------------------------------------------------------------------------


def test_two_windows_with_30_minute_slots() -> None:
    slots = slots_for(MONDAY, TWO_WINDOWS)
    assert hm(slots) == grid("09:00", 6, 30) + grid("13:00", 8, 30)
    first = slots[0]
    assert first.starts_at == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # CET = UTC+1
    assert first.starts_at.tzinfo is UTC
    assert first.ends_at.tzinfo is UTC
    assert first.local_start.tzinfo is BERLIN
    assert all(s.ends_at - s.starts_at == mins(30) for s in slots)


def test_no_window_on_other_weekdays() -> None:
    assert slots_for(MONDAY + timedelta(days=1), TWO_WINDOWS) == []


def test_buffer_spaces_the_grid() -> None:
    slots = slots_for(MONDAY, MORNING, rules=make_rules(buffer=5))
    # 11:55 would end 12:25, past the window.
    assert hm(slots) == ["09:00", "09:35", "10:10", "10:45", "11:20"]


def test_trailing_buffer_may_run_past_window_end() -> None:
    weekly = [WeeklyWindow(weekday=0, start=time(9), end=time(10, 5))]
    slots = slots_for(MONDAY, weekly, rules=make_rules(buffer=5))
    # 09:35 + 30 = 10:05 fits exactly; its buffer to 10:10 is outside the window.
    assert hm(slots) == ["09:00", "09:35"]


def test_slot_must_fit_inside_window() -> None:
    weekly = [WeeklyWindow(weekday=0, start=time(9), end=time(10, 29))]
    assert hm(slots_for(MONDAY, weekly)) == ["09:00", "09:30"]


def test_touching_windows_merge_into_one_grid() -> None:
    weekly = [
        WeeklyWindow(weekday=0, start=time(9), end=time(10)),
        WeeklyWindow(weekday=0, start=time(10), end=time(11)),
    ]
    # As one 09:00-11:00 interval: 09:00, 09:35, 10:10 (10:10 straddles the join).
    assert hm(slots_for(MONDAY, weekly, rules=make_rules(buffer=5))) == ["09:00", "09:35", "10:10"]


def test_overlapping_windows_merge_without_duplicates() -> None:
    weekly = [
        WeeklyWindow(weekday=0, start=time(9), end=time(11)),
        WeeklyWindow(weekday=0, start=time(10), end=time(12)),
    ]
    assert hm(slots_for(MONDAY, weekly)) == grid("09:00", 6, 30)


# --- busy intervals -------------------------------------------------------------------------


def busy_local(
    day: date, start: tuple[int, int], end: tuple[int, int]
) -> tuple[datetime, datetime]:
    return local(BERLIN, day, *start), local(BERLIN, day, *end)


def test_busy_on_grid_removes_exactly_its_slot() -> None:
    rules = make_rules(buffer=5)
    # Booked 09:35-10:05 plus its 5-minute buffer.
    busy = [busy_local(MONDAY, (9, 35), (10, 10))]
    assert hm(slots_for(MONDAY, MORNING, rules=rules, busy=busy)) == [
        "09:00",
        "10:10",
        "10:45",
        "11:20",
    ]


def test_busy_off_grid_removes_every_slot_it_touches_and_grid_does_not_move() -> None:
    rules = make_rules(buffer=5)
    busy = [busy_local(MONDAY, (9, 40), (10, 15))]
    assert hm(slots_for(MONDAY, MORNING, rules=rules, busy=busy)) == ["09:00", "10:45", "11:20"]


def test_busy_buffer_blocks_the_next_slot() -> None:
    rules = make_rules(buffer=5)
    # Appointment 08:30-09:00 (booked before hours) whose buffer runs to 09:05.
    blocked = slots_for(MONDAY, MORNING, rules=rules, busy=[busy_local(MONDAY, (8, 30), (9, 5))])
    assert hm(blocked)[0] == "09:35"
    # Ending exactly at 09:00 is half-open: the 09:00 slot stays free.
    touching = slots_for(MONDAY, MORNING, rules=rules, busy=[busy_local(MONDAY, (8, 25), (9, 0))])
    assert hm(touching)[0] == "09:00"


def test_candidate_buffer_must_not_hit_busy() -> None:
    rules = make_rules(buffer=5)
    # Starts inside the 09:00 slot's buffer (09:30-09:35): 09:00 is not free.
    inside = slots_for(MONDAY, MORNING, rules=rules, busy=[busy_local(MONDAY, (9, 32), (9, 34))])
    assert "09:00" not in hm(inside)
    assert "09:35" in hm(inside)
    # Starting right at the buffer's end is fine.
    after = slots_for(MONDAY, MORNING, rules=rules, busy=[busy_local(MONDAY, (9, 35), (9, 36))])
    assert "09:00" in hm(after)
    assert "09:35" not in hm(after)


def test_overlapping_and_unsorted_busy_intervals() -> None:
    busy = [
        busy_local(MONDAY, (11, 0), (11, 10)),
        busy_local(MONDAY, (9, 0), (10, 0)),
        busy_local(MONDAY, (9, 10), (9, 20)),  # nested in the previous one
    ]
    assert hm(slots_for(MONDAY, MORNING, busy=busy)) == ["10:00", "10:30", "11:30"]


def test_busy_given_in_another_zone() -> None:
    ny_busy = (local(NEW_YORK, MONDAY, 4, 0), local(NEW_YORK, MONDAY, 4, 30))  # 10:00 Berlin
    assert "10:00" not in hm(slots_for(MONDAY, MORNING, busy=[ny_busy]))


# --- cut-offs -------------------------------------------------------------------------------


def test_min_notice_cut_off_is_inclusive() -> None:
    now = local(BERLIN, MONDAY, 8, 0)
    rules = make_rules(notice=timedelta(hours=2))
    assert hm(slots_for(MONDAY, TWO_WINDOWS, rules=rules, now=now)) == (
        ["10:00", "10:30", "11:00", "11:30", *grid("13:00", 8, 30)]
    )
    later = now + mins(1)
    assert hm(slots_for(MONDAY, TWO_WINDOWS, rules=rules, now=later))[0] == "10:30"


def test_horizon_cut_off_is_inclusive() -> None:
    now = local(BERLIN, MONDAY, 8, 0)
    rules = make_rules(horizon=timedelta(hours=6))  # up to 14:00
    assert hm(slots_for(MONDAY, TWO_WINDOWS, rules=rules, now=now)) == (
        [*grid("09:00", 6, 30), "13:00", "13:30", "14:00"]
    )


def test_horizon_across_days() -> None:
    now = local(BERLIN, MONDAY, 0, 0)
    rules = make_rules(horizon=timedelta(days=2))
    slots = slots_for(
        MONDAY, every_day(time(9), time(10)), rules=rules, now=now, last=MONDAY + timedelta(6)
    )
    assert [s.local_start.date() for s in slots] == [MONDAY] * 2 + [MONDAY + timedelta(1)] * 2


def test_now_in_the_past_window_and_in_another_zone() -> None:
    now = local(TOKYO, MONDAY, 18, 15)  # 10:15 Berlin
    assert hm(slots_for(MONDAY, MORNING, now=now)) == ["10:30", "11:00", "11:30"]


def test_range_bounds_are_half_open_and_keep_the_grid() -> None:
    rules = make_rules()
    result = free_slots(
        rules=rules,
        weekly=TWO_WINDOWS,
        overrides=[],
        busy=[],
        range_start=local(BERLIN, MONDAY, 10, 15),
        range_end=local(BERLIN, MONDAY, 14, 0),
        now=LONG_AGO,
    )
    # Grid stays anchored at 09:00 (10:15 is not a slot); 14:00 is excluded.
    assert hm(result) == ["10:30", "11:00", "11:30", "13:00", "13:30"]
    inclusive = free_slots(
        rules=rules,
        weekly=TWO_WINDOWS,
        overrides=[],
        busy=[],
        range_start=local(BERLIN, MONDAY, 10, 0),
        range_end=local(BERLIN, MONDAY, 10, 1),
        now=LONG_AGO,
    )
    assert hm(inclusive) == ["10:00"]


# --- overrides ------------------------------------------------------------------------------


def test_whole_day_off_removes_only_that_day() -> None:
    weekly = every_day(time(9), time(10))
    off = [DateOverride(day=MONDAY, kind="off")]
    slots = slots_for(MONDAY - timedelta(1), weekly, overrides=off, last=MONDAY + timedelta(1))
    assert [s.local_start.date() for s in slots] == [MONDAY - timedelta(1)] * 2 + [
        MONDAY + timedelta(1)
    ] * 2


def test_part_day_off_splits_window_and_restarts_grid() -> None:
    off = [DateOverride(day=MONDAY, kind="off", start=time(10, 15), end=time(10, 45))]
    assert hm(slots_for(MONDAY, MORNING, overrides=off)) == [
        "09:00",
        "09:30",
        "10:45",
        "11:15",
    ]


def test_several_part_day_offs() -> None:
    offs = [
        DateOverride(day=MONDAY, kind="off", start=time(9), end=time(10)),
        DateOverride(day=MONDAY, kind="off", start=time(11), end=time(15)),
    ]
    expected = ["10:00", "10:30", *grid("15:00", 4, 30)]
    assert hm(slots_for(MONDAY, TWO_WINDOWS, overrides=offs)) == expected


def test_off_on_another_date_changes_nothing() -> None:
    off = [DateOverride(day=MONDAY + timedelta(7), kind="off")]
    assert hm(slots_for(MONDAY, MORNING, overrides=off)) == grid("09:00", 6, 30)


def test_extra_hours_on_a_free_day() -> None:
    saturday = MONDAY + timedelta(5)
    extra = [DateOverride(day=saturday, kind="extra", start=time(10), end=time(11))]
    assert hm(slots_for(saturday, TWO_WINDOWS, overrides=extra)) == ["10:00", "10:30"]


def test_extra_hours_adjacent_to_window_extend_it() -> None:
    extra = [DateOverride(day=MONDAY, kind="extra", start=time(12), end=time(13))]
    # One 09:00-17:00 interval.
    assert hm(slots_for(MONDAY, TWO_WINDOWS, overrides=extra)) == grid("09:00", 16, 30)


def test_extra_hours_win_over_off_on_the_same_day() -> None:
    overrides = [
        DateOverride(day=MONDAY, kind="off"),
        DateOverride(day=MONDAY, kind="extra", start=time(18), end=time(19)),
    ]
    assert hm(slots_for(MONDAY, TWO_WINDOWS, overrides=overrides)) == ["18:00", "18:30"]
    part = [
        DateOverride(day=MONDAY, kind="off", start=time(9), end=time(12)),
        DateOverride(day=MONDAY, kind="extra", start=time(11), end=time(12)),
    ]
    assert hm(slots_for(MONDAY, MORNING, overrides=part)) == ["11:00", "11:30"]


# --- DST ------------------------------------------------------------------------------------

# (zone, transition date): the change happens in the small hours of a Sunday.
SPRING = [(BERLIN, date(2026, 3, 29)), (NEW_YORK, date(2026, 3, 8))]
FALL = [(BERLIN, date(2026, 10, 25)), (NEW_YORK, date(2026, 11, 1))]
IDS_SPRING = ["berlin-2026-03-29", "new-york-2026-03-08"]
IDS_FALL = ["berlin-2026-10-25", "new-york-2026-11-01"]


@pytest.mark.parametrize(
    ("tz", "day", "utc_hours"),
    [
        (BERLIN, date(2026, 3, 29), [8, 7, 7]),  # CET -> CEST
        (NEW_YORK, date(2026, 3, 8), [14, 13, 13]),  # EST -> EDT
        (BERLIN, date(2026, 10, 25), [7, 8, 8]),  # CEST -> CET
        (NEW_YORK, date(2026, 11, 1), [13, 14, 14]),  # EDT -> EST
    ],
    ids=IDS_SPRING + IDS_FALL,
)
def test_nine_oclock_stays_nine_local_across_the_change(
    tz: ZoneInfo, day: date, utc_hours: list[int]
) -> None:
    before, after = day - timedelta(1), day + timedelta(1)
    rules = make_rules(tz)
    slots = slots_for(
        before, every_day(time(9), time(9, 30)), rules=rules, last=after, now=LONG_AGO
    )
    assert hm(slots) == ["09:00"] * 3
    assert [s.local_start.date() for s in slots] == [before, day, after]
    # Same wall time; the UTC time moves by the hour the clocks moved.
    assert [s.starts_at.hour for s in slots] == utc_hours
    assert all(s.starts_at.minute == 0 for s in slots)


@pytest.mark.parametrize(("tz", "day"), SPRING, ids=IDS_SPRING)
def test_window_starting_in_the_gap_starts_when_clocks_resume(tz: ZoneInfo, day: date) -> None:
    # Berlin skips 02:00-03:00; New York skips 02:00-03:00 too.
    weekly = [WeeklyWindow(weekday=6, start=time(2), end=time(4))]
    slots = slots_for(day, weekly, rules=make_rules(tz))
    assert hm(slots) == ["03:00", "03:30"]
    assert slots[0].starts_at == slots[0].local_start.astimezone(UTC)
    assert slots[0].local_start.utcoffset() == slots[0].local_start.replace(hour=4).utcoffset()


@pytest.mark.parametrize(("tz", "day"), SPRING, ids=IDS_SPRING)
def test_window_through_the_skipped_hour(tz: ZoneInfo, day: date) -> None:
    weekly = [WeeklyWindow(weekday=6, start=time(1), end=time(4))]
    slots = slots_for(day, weekly, rules=make_rules(tz))
    # Two real hours; no slot claims a local start that does not exist.
    assert hm(slots) == ["01:00", "01:30", "03:00", "03:30"]
    assert slots[-1].ends_at - slots[0].starts_at == timedelta(hours=2)
    for slot in slots:
        assert slot.local_start.astimezone(UTC).astimezone(tz) == slot.local_start
        assert slot.local_start.hour != 2


@pytest.mark.parametrize(("tz", "day"), SPRING, ids=IDS_SPRING)
def test_window_ending_in_or_lying_in_the_gap(tz: ZoneInfo, day: date) -> None:
    ends_in_gap = [WeeklyWindow(weekday=6, start=time(1), end=time(2, 30))]
    assert hm(slots_for(day, ends_in_gap, rules=make_rules(tz))) == ["01:00", "01:30"]
    starts_mid_gap = [WeeklyWindow(weekday=6, start=time(2, 30), end=time(4))]
    # Not 03:30 (shifting by the gap): the first real time reading at/after 02:30 is 03:00.
    assert hm(slots_for(day, starts_mid_gap, rules=make_rules(tz))) == ["03:00", "03:30"]
    inside_gap = [WeeklyWindow(weekday=6, start=time(2), end=time(2, 45))]
    assert slots_for(day, inside_gap, rules=make_rules(tz)) == []


@pytest.mark.parametrize(
    ("tz", "day", "window", "expected"),
    [
        (
            BERLIN,
            date(2026, 10, 25),
            (time(1), time(4)),
            [
                *("01:00+0200", "01:30+0200", "02:00+0200", "02:30+0200"),
                *("02:00+0100", "02:30+0100", "03:00+0100", "03:30+0100"),
            ],
        ),
        (
            NEW_YORK,
            date(2026, 11, 1),
            (time(0), time(3)),
            [
                *("00:00-0400", "00:30-0400", "01:00-0400", "01:30-0400"),
                *("01:00-0500", "01:30-0500", "02:00-0500", "02:30-0500"),
            ],
        ),
    ],
    ids=IDS_FALL,
)
def test_window_through_the_repeated_hour_offers_it_twice(
    tz: ZoneInfo, day: date, window: tuple[time, time], expected: list[str]
) -> None:
    weekly = [WeeklyWindow(weekday=6, start=window[0], end=window[1])]
    slots = slots_for(day, weekly, rules=make_rules(tz))
    assert hmz(slots) == expected
    starts = [s.starts_at for s in slots]
    assert len(set(starts)) == len(starts) == 8
    assert starts == sorted(starts)
    assert slots[-1].ends_at - slots[0].starts_at == timedelta(hours=4)  # one hour longer


def test_fall_back_window_ending_inside_the_repeated_hour_takes_its_second_pass() -> None:
    day = date(2026, 10, 25)
    weekly = [WeeklyWindow(weekday=6, start=time(1), end=time(2, 30))]
    assert hmz(slots_for(day, weekly)) == [
        "01:00+0200",
        "01:30+0200",
        "02:00+0200",
        "02:30+0200",
        "02:00+0100",
    ]


def test_fall_back_window_ending_at_start_of_repeated_hour_ends_at_first_pass() -> None:
    day = date(2026, 10, 25)
    weekly = [WeeklyWindow(weekday=6, start=time(0), end=time(2))]
    assert hmz(slots_for(day, weekly)) == [
        "00:00+0200",
        "00:30+0200",
        "01:00+0200",
        "01:30+0200",
    ]


def test_fall_back_window_starting_in_repeated_hour_starts_at_first_pass() -> None:
    day = date(2026, 10, 25)
    weekly = [WeeklyWindow(weekday=6, start=time(2, 30), end=time(3, 30))]
    assert hmz(slots_for(day, weekly)) == [
        "02:30+0200",
        "02:00+0100",
        "02:30+0100",
        "03:00+0100",
    ]


def test_off_through_repeated_hour_removes_both_passes() -> None:
    day = date(2026, 10, 25)
    weekly = [WeeklyWindow(weekday=6, start=time(1), end=time(4))]
    off = [DateOverride(day=day, kind="off", start=time(2), end=time(3))]
    assert hmz(slots_for(day, weekly, overrides=off)) == [
        "01:00+0200",
        "01:30+0200",
        "03:00+0100",
        "03:30+0100",
    ]


def test_working_intervals_on_dst_days() -> None:
    spring, fall = date(2026, 3, 29), date(2026, 10, 25)
    weekly = [WeeklyWindow(weekday=6, start=time(1), end=time(4))]
    got = working_intervals(
        rules=make_rules(),
        weekly=weekly,
        overrides=[],
        range_start=datetime(2026, 3, 28, 23, 30, tzinfo=UTC),  # 00:30 local on 03-29
        range_end=datetime(2026, 3, 29, 0, 0, tzinfo=UTC),
    )
    assert got == [
        (datetime(2026, 3, 29, 0, 0, tzinfo=UTC), datetime(2026, 3, 29, 2, 0, tzinfo=UTC))
    ]
    got = working_intervals(
        rules=make_rules(),
        weekly=weekly,
        overrides=[],
        range_start=local(BERLIN, fall, 12),
        range_end=local(BERLIN, fall, 13),
    )
    assert got == [
        (datetime(2026, 10, 24, 23, 0, tzinfo=UTC), datetime(2026, 10, 25, 3, 0, tzinfo=UTC))
    ]
    assert spring.weekday() == fall.weekday() == 6


# --- zones ----------------------------------------------------------------------------------


def test_tokyo_doctor_and_patient_monday_in_los_angeles() -> None:
    tuesday = MONDAY + timedelta(1)
    weekly = [
        WeeklyWindow(weekday=0, start=time(9), end=time(12)),
        WeeklyWindow(weekday=0, start=time(16), end=time(18)),
        WeeklyWindow(weekday=1, start=time(9), end=time(10)),
        WeeklyWindow(weekday=1, start=time(17), end=time(18)),
    ]
    # Patient's Monday 00:00-24:00 PST is Monday 17:00 to Tuesday 17:00 in Tokyo.
    range_start, range_end = day_range(LOS_ANGELES, MONDAY)
    slots = free_slots(
        rules=make_rules(TOKYO),
        weekly=weekly,
        overrides=[],
        busy=[],
        range_start=range_start,
        range_end=range_end,
        now=LONG_AGO,
    )
    assert [(s.local_start.date(), s.local_start.strftime("%H:%M")) for s in slots] == [
        (MONDAY, "17:00"),
        (MONDAY, "17:30"),
        (tuesday, "09:00"),
        (tuesday, "09:30"),
    ]
    assert {s.starts_at.astimezone(LOS_ANGELES).date() for s in slots} == {MONDAY}
    assert slots[0].starts_at == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    # working_intervals covers both doctor days whole, unclipped.
    hours = working_intervals(
        rules=make_rules(TOKYO),
        weekly=weekly,
        overrides=[],
        range_start=range_start,
        range_end=range_end,
    )
    assert [h[0].astimezone(TOKYO).strftime("%a %H:%M") for h in hours] == [
        "Mon 09:00",
        "Mon 16:00",
        "Tue 09:00",
        "Tue 17:00",
    ]


def test_working_intervals_touching_days_only() -> None:
    weekly = every_day(time(9), time(10))
    hours = working_intervals(
        rules=make_rules(),
        weekly=weekly,
        overrides=[],
        range_start=local(BERLIN, MONDAY, 0),
        range_end=local(BERLIN, MONDAY + timedelta(1), 0),  # exclusive: Tuesday not touched
    )
    assert hours == [(local(BERLIN, MONDAY, 9).astimezone(UTC), local(BERLIN, MONDAY, 10))]
    assert all(h[0].tzinfo is UTC and h[1].tzinfo is UTC for h in hours)


# --- outside_hours --------------------------------------------------------------------------


def test_outside_hours_flags_appointments_after_hours_shrink() -> None:
    appointments = [
        busy_local(MONDAY, (16, 0), (16, 30)),  # afternoon no longer worked
        busy_local(MONDAY, (10, 0), (10, 30)),
        busy_local(MONDAY, (11, 45), (12, 15)),  # straddles the new end
        busy_local(MONDAY, (11, 30), (12, 0)),  # ends exactly at the end: inside
        busy_local(MONDAY + timedelta(1), (10, 0), (10, 30)),  # Tuesday: no hours
    ]
    assert outside_hours(
        rules=make_rules(), weekly=TWO_WINDOWS, overrides=[], appointments=appointments
    ) == [2, 4]
    assert outside_hours(
        rules=make_rules(), weekly=MORNING, overrides=[], appointments=appointments
    ) == [0, 2, 4]


def test_outside_hours_respects_overrides() -> None:
    tuesday = MONDAY + timedelta(1)
    appointments = [busy_local(MONDAY, (10, 0), (10, 30)), busy_local(tuesday, (10, 0), (10, 30))]
    overrides = [
        DateOverride(day=MONDAY, kind="off"),
        DateOverride(day=tuesday, kind="extra", start=time(9), end=time(11)),
    ]
    assert outside_hours(
        rules=make_rules(), weekly=MORNING, overrides=overrides, appointments=appointments
    ) == [0]


def test_outside_hours_spanning_touching_windows_is_inside() -> None:
    weekly = [
        WeeklyWindow(weekday=0, start=time(9), end=time(10)),
        WeeklyWindow(weekday=0, start=time(10), end=time(11)),
    ]
    appointments = [busy_local(MONDAY, (9, 45), (10, 15)), busy_local(MONDAY, (8, 45), (9, 15))]
    assert outside_hours(
        rules=make_rules(), weekly=weekly, overrides=[], appointments=appointments
    ) == [1]


def test_outside_hours_empty() -> None:
    assert outside_hours(rules=make_rules(), weekly=MORNING, overrides=[], appointments=[]) == []


# --- validation -----------------------------------------------------------------------------

NAIVE = datetime(2026, 1, 5, 9, 0)  # deliberately naive, to be rejected
AWARE = local(BERLIN, MONDAY, 9)


def call_free_slots(**changes: object) -> list[Slot]:
    kwargs: dict[str, object] = {
        "rules": make_rules(),
        "weekly": MORNING,
        "overrides": [],
        "busy": [],
        "range_start": AWARE,
        "range_end": AWARE + timedelta(hours=3),
        "now": LONG_AGO,
    }
    kwargs.update(changes)
    return free_slots(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"now": NAIVE}, "now must be timezone-aware"),
        ({"range_start": NAIVE}, "range_start must be timezone-aware"),
        ({"range_end": NAIVE}, "range_end must be timezone-aware"),
        ({"range_end": AWARE}, "must be after range_start"),
        ({"range_end": AWARE - MIN}, "must be after range_start"),
        ({"busy": [(NAIVE, AWARE)]}, r"busy\[0\] start must be timezone-aware"),
        ({"busy": [(AWARE, AWARE)]}, r"busy\[0\]: end .* must be after start"),
    ],
)
def test_free_slots_rejects_bad_arguments(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call_free_slots(**changes)


def test_valid_call_for_the_validation_baseline() -> None:
    assert len(call_free_slots()) == 6


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("slot_length", timedelta(0), "slot_length must be positive"),
        ("slot_length", -MIN, "slot_length must be positive"),
        ("buffer", -MIN, "buffer must not be negative"),
        ("min_notice", -MIN, "min_notice must not be negative"),
        ("horizon", -MIN, "horizon must not be negative"),
    ],
)
def test_slot_rules_reject_bad_values(field: str, value: timedelta, message: str) -> None:
    kwargs: dict[str, object] = {
        "time_zone": BERLIN,
        "slot_length": mins(30),
        "buffer": timedelta(0),
        "min_notice": timedelta(0),
        "horizon": timedelta(days=30),
        field: value,
    }
    with pytest.raises(ValueError, match=message):
        SlotRules(**kwargs)  # type: ignore[arg-type]


def test_slot_rules_need_a_zoneinfo() -> None:
    with pytest.raises(ValueError, match=r"time_zone must be a zoneinfo\.ZoneInfo"):
        SlotRules(UTC, mins(30), timedelta(0), timedelta(0), timedelta(1))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("weekday", "start", "end", "message"),
    [
        (0, time(12), time(9), "must be after start"),
        (0, time(9), time(9), "must be after start"),
        (7, time(9), time(10), "weekday must be 0"),
        (-1, time(9), time(10), "weekday must be 0"),
        (0, time(9, tzinfo=UTC), time(10), "without tzinfo"),
    ],
)
def test_weekly_window_rejects_bad_values(
    weekday: int, start: time, end: time, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        WeeklyWindow(weekday=weekday, start=start, end=end)


def test_date_override_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match=r"'extra' override .* needs start and end"):
        DateOverride(day=MONDAY, kind="extra")
    with pytest.raises(ValueError, match="both start and end, or neither"):
        DateOverride(day=MONDAY, kind="extra", start=time(9))
    with pytest.raises(ValueError, match="both start and end, or neither"):
        DateOverride(day=MONDAY, kind="off", end=time(9))
    with pytest.raises(ValueError, match="must be after start"):
        DateOverride(day=MONDAY, kind="off", start=time(10), end=time(9))
    with pytest.raises(ValueError, match="kind must be 'off' or 'extra'"):
        DateOverride(day=MONDAY, kind="holiday")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a date"):
        DateOverride(day=AWARE, kind="off")


def test_working_intervals_and_outside_hours_validate() -> None:
    with pytest.raises(ValueError, match="must be after range_start"):
        working_intervals(
            rules=make_rules(), weekly=MORNING, overrides=[], range_start=AWARE, range_end=AWARE
        )
    with pytest.raises(ValueError, match="range_start must be timezone-aware"):
        working_intervals(
            rules=make_rules(), weekly=MORNING, overrides=[], range_start=NAIVE, range_end=AWARE
        )
    with pytest.raises(ValueError, match=r"appointments\[1\] end must be timezone-aware"):
        outside_hours(
            rules=make_rules(),
            weekly=MORNING,
            overrides=[],
            appointments=[(AWARE, AWARE + MIN), (AWARE, NAIVE)],
        )
    with pytest.raises(ValueError, match=r"appointments\[0\]: end .* must be after start"):
        outside_hours(
            rules=make_rules(), weekly=MORNING, overrides=[], appointments=[(AWARE, AWARE - MIN)]
        )


# --- properties and performance -------------------------------------------------------------


def overlaps(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, TOKYO], ids=str)
def test_random_busy_sets_never_overlap_and_nothing_free_is_lost(tz: ZoneInfo) -> None:
    rng = random.Random(20260329)
    weekly = [WeeklyWindow(weekday=d, start=time(8), end=time(12, 10)) for d in range(7)] + [
        WeeklyWindow(weekday=d, start=time(13, 5), end=time(18)) for d in range(5)
    ]
    first, last = date(2026, 3, 1), date(2026, 3, 31)  # includes both spring changes
    for _ in range(25):
        rules = make_rules(tz, slot=rng.choice([15, 20, 30, 45]), buffer=rng.choice([0, 5, 10]))
        local_start, local_end = day_range(tz, first, last)
        # Offsets are added in UTC: adding to a zoned datetime is wall-clock arithmetic.
        range_start, range_end = local_start.astimezone(UTC), local_end.astimezone(UTC)
        span = int((range_end - range_start).total_seconds() // 60)
        busy = []
        for _ in range(rng.randrange(0, 300)):
            start = range_start + mins(rng.randrange(-120, span))
            busy.append((start, start + mins(rng.randrange(1, 240))))
        everything = free_slots(
            rules=rules,
            weekly=weekly,
            overrides=[],
            busy=[],
            range_start=range_start,
            range_end=range_end,
            now=LONG_AGO,
        )
        got = free_slots(
            rules=rules,
            weekly=weekly,
            overrides=[],
            busy=busy,
            range_start=range_start,
            range_end=range_end,
            now=LONG_AGO,
        )
        step = rules.slot_length + rules.buffer
        expected = [
            s
            for s in everything
            if not any(overlaps((s.starts_at, s.starts_at + step), b) for b in busy)
        ]
        assert got == expected
        for slot in got:
            assert not any(overlaps((slot.starts_at, slot.starts_at + step), b) for b in busy)
        starts = [s.starts_at for s in got]
        assert starts == sorted(set(starts))


def test_a_month_with_hundreds_of_busy_intervals() -> None:
    """A month of 15-minute slots around 500 random bookings: right and repeatable (its speed
    is measured by bench/slots.py, not asserted here)."""
    rng = random.Random(7)
    rules = make_rules(slot=15, buffer=5)
    weekly = every_day(time(7), time(21))
    range_start, range_end = day_range(BERLIN, date(2026, 3, 1), date(2026, 3, 31))
    range_start = range_start.astimezone(UTC)  # so that adding minutes is real time
    busy = []
    for _ in range(500):
        start = range_start + mins(rng.randrange(0, 31 * 24 * 60))
        busy.append((start, start + mins(20)))
    runs = [
        free_slots(
            rules=rules,
            weekly=weekly,
            overrides=[],
            busy=busy,
            range_start=range_start,
            range_end=range_end,
            now=LONG_AGO,
        )
        for _ in range(5)
    ]
    slots = runs[0]
    assert all(run == slots for run in runs)
    assert 0 < len(slots) < 31 * 42
    for slot in slots:
        assert not any(overlaps((slot.starts_at, slot.ends_at), b) for b in busy)
