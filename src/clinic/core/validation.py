"""Reusable input types: what the clinic accepts from outside, checked once at the edge.

Every schema and route parameter uses these, so bad input is a clear 422 before any service or
query runs: strings without NUL bytes (PostgreSQL refuses them), ids within ``BIGINT``, strict
integers (no ``true``, no ``1.5``), dates and instants within a window every date computation
survives, IANA zone names that name a zone (not ``localtime``, not a folder such as
``Europe``), and wall-clock times without a UTC offset.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, available_timezones

from annotated_types import Ge, Le
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, WithJsonSchema

MAX_ID = 2**63 - 1
"""Ids are PostgreSQL ``BIGINT`` identities."""

EARLIEST = date(1800, 1, 1)
LATEST = date(2300, 12, 31)
"""Dates and instants outside this window are refused: far enough for any birth date or
booking, close enough that adding weeks or changing zones never overflows."""

_DIGITS = re.compile(r"^\s*[-+]?\d+\s*$")
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _integer_only(value: Any) -> Any:
    """Refuse what lax int parsing would turn into an integer: booleans, floats, and text that
    is not plain digits (``"1.0"``); digit strings from paths, queries and forms are fine."""
    if isinstance(value, bool | float) or (isinstance(value, str) and not _DIGITS.match(value)):
        raise ValueError("must be an integer")
    return value


def _not_a_number(value: Any) -> Any:
    """Refuse numbers where a date or instant is expected (lax parsing reads them as Unix
    timestamps: ``start=0.5`` would be 1970)."""
    if isinstance(value, bool | int | float) or (
        isinstance(value, str | bytes) and _NUMBER.match(str(value))
    ):
        raise ValueError("must be an ISO 8601 date or date-time, not a number")
    return value


def in_window(value: date) -> date:
    day = value.date() if isinstance(value, datetime) else value
    if not EARLIEST <= day <= LATEST:
        raise ValueError(f"must be between {EARLIEST.isoformat()} and {LATEST.isoformat()}")
    return value


def _instant_in_window(value: datetime) -> datetime:
    in_window(value)
    return value


def _day_in_window(value: date) -> date:
    return in_window(value)


@lru_cache(maxsize=1)
def zone_names() -> frozenset[str]:
    """IANA zone names this machine knows (tzdata), without ``localtime`` and ``Factory``."""
    return frozenset(available_timezones()) - {"localtime", "Factory"}


def check_time_zone(value: str) -> str:
    """``value`` when it names an IANA zone; folders like ``Europe`` and ``localtime`` fail."""
    if value not in zone_names():
        raise ValueError(f"unknown IANA time zone {value!r} (for example Europe/Berlin)")
    return value


def zone_or_none(value: str | None) -> ZoneInfo | None:
    """The zone named ``value``, or None when it names none (never raises)."""
    if not value or value not in zone_names():
        return None
    try:
        return ZoneInfo(value)
    except (KeyError, ValueError, OSError):
        return None


def _naive_time(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("give a wall-clock time without a UTC offset (the zone is the doctor's)")
    return value


def _blank_is_none(value: Any) -> Any:
    """An empty form or query field means "not given"."""
    return None if value == "" else value


def _day_text_or_none(value: str | None) -> str | None:
    return None if value is None or value == "" else check_day_text(value)


def check_day_text(value: str) -> str:
    """A ``YYYY-MM-DD`` text within the window, kept as text (pages parse it themselves)."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a date like 2026-03-02") from None
    in_window(day)
    return value


def check_instant_text(value: str) -> str:
    """An ISO 8601 instant text within the window, kept as text."""
    no_nul(value)
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time with its UTC offset") from None
    in_window(instant)
    return value


Text = Annotated[str, AfterValidator(no_nul)]
"""Any string from outside: NUL bytes refused."""

Id = Annotated[int, BeforeValidator(_integer_only), Ge(1), Le(MAX_ID)]
"""A row id: a positive ``BIGINT``; no booleans, no fractions (digit strings from paths and
forms are fine)."""

Integer = Annotated[int, BeforeValidator(_integer_only)]
"""An integer field of a body: no booleans, no fractions."""

Instant = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_instant_in_window)]
"""A date-time within the window, never read from a number."""

AwareInstant = Annotated[
    AwareDatetime, BeforeValidator(_not_a_number), AfterValidator(_instant_in_window)
]
"""An :data:`Instant` that must carry its UTC offset."""

Day = Annotated[date, BeforeValidator(_not_a_number), AfterValidator(_day_in_window)]
"""A calendar date within the window, never read from a number."""

PastDay = Annotated[date, BeforeValidator(_not_a_number)]
"""A date the schema bounds itself, more tightly than the window (a birth date: not in the
future, at most 130 years ago), so its message can say which bound was passed."""

DayText = Annotated[str, AfterValidator(check_day_text)]
"""A ``YYYY-MM-DD`` query parameter the page parses itself, checked like :data:`Day`."""

InstantText = Annotated[str, AfterValidator(check_instant_text)]
"""An ISO 8601 instant query parameter the page parses itself, checked like :data:`Instant`."""

TimeZoneName = Annotated[str, AfterValidator(check_time_zone)]
"""An IANA zone name from ``zoneinfo.available_timezones()``."""

WallClock = Annotated[
    time,
    AfterValidator(_naive_time),
    # JSON Schema's "time" format is RFC 3339's, which requires an offset: say what is meant.
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?$",
            "description": "local wall-clock time HH:MM[:SS], without a UTC offset",
        }
    ),
]
"""A local time of day, refused with a UTC offset (``09:00+05:00``)."""

PageId = Annotated[Id | None, BeforeValidator(_blank_is_none)]
"""An optional id in a page's query string, where an empty field means none."""

PageDay = Annotated[str | None, AfterValidator(_day_text_or_none)]
"""An optional ``YYYY-MM-DD`` in a page's query string, where an empty field means none."""
