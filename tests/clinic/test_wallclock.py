"""A time in the hour a zone repeats is shown with its UTC offset, on pages (the ``local``
template filter) and in messages; every other time is shown as people read it."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from clinic.core.wallclock import is_repeated, local_text
from clinic.web.render import TEMPLATES

BERLIN = ZoneInfo("Europe/Berlin")
# 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET, so 02:00-02:59 happens twice.
FIRST_0230 = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
SECOND_0230 = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET


def test_both_readings_of_a_repeated_time_say_which_one_they_are() -> None:
    first, second = local_text(FIRST_0230, BERLIN, "%H:%M"), local_text(SECOND_0230, BERLIN)
    assert first == "02:30 (UTC+02:00)"
    assert second == "Sun 25 Oct 2026, 02:30 (UTC+01:00)"


def test_ordinary_times_and_date_only_formats_are_left_alone() -> None:
    assert local_text(datetime(2026, 10, 25, 9, 0, tzinfo=UTC), BERLIN, "%H:%M") == "10:00"
    # The hour clocks skip in spring is not repeated: no offset there.
    assert local_text(datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "Europe/Berlin", "%H:%M") == (
        "03:30"
    )
    assert local_text(FIRST_0230, BERLIN, "%d %b %Y") == "25 Oct 2026"
    assert not is_repeated(datetime(2026, 7, 1, 12, 0, tzinfo=BERLIN))


def test_the_page_filter_marks_the_repeated_hour() -> None:
    template = TEMPLATES.env.from_string("{{ t | local(zone, '%H:%M') }}")
    assert template.render(t=FIRST_0230, zone="Europe/Berlin") == "02:30 (UTC+02:00)"
    assert template.render(t=SECOND_0230, zone="Europe/Berlin") == "02:30 (UTC+01:00)"
    assert template.render(t=SECOND_0230, zone="UTC") == "01:30"
    # A zone with a half-hour shift (Lord Howe goes back by 30 minutes).
    lord_howe = datetime(2026, 4, 4, 14, 45, tzinfo=UTC)  # 01:45 +11:00, then again +10:30
    assert "(UTC+11:00)" in template.render(t=lord_howe, zone="Australia/Lord_Howe")
