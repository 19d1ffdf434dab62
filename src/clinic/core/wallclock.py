"""Wall-clock times as people read them, and the one case that needs more than that: in the
hour a zone repeats when its clocks go back, "02:30" names two instants, so a time in it is
shown with its UTC offset ("02:30 (UTC+02:00)" and, an hour later, "02:30 (UTC+01:00)")."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

DEFAULT_FORMAT = "%a %d %b %Y, %H:%M"


def utc_offset(local: datetime) -> str:
    """``UTC+01:00`` for an aware datetime."""
    offset = local.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def is_repeated(local: datetime) -> bool:
    """Whether ``local``'s wall-clock time occurs twice in its zone (the hour when clocks go
    back): the other reading of the same wall time has another offset."""
    other = local.replace(fold=1 - local.fold)
    return other.utcoffset() != local.utcoffset()


def local_text(value: datetime, zone: ZoneInfo | str, fmt: str = DEFAULT_FORMAT) -> str:
    """``value`` in ``zone`` as ``fmt`` says; in a repeated hour, with its UTC offset."""
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    local = value.astimezone(tz)
    text = local.strftime(fmt)
    if "%H" in fmt and is_repeated(local):
        return f"{text} ({utc_offset(local)})"
    return text
