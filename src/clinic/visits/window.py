"""When a visit can be joined: from ``visit_join_before`` before the start until
``visit_join_after`` after the end. Pure: the clock is an argument."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class WindowState(StrEnum):
    NOT_YET = "not_yet"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class JoinWindow:
    opens_at: datetime
    closes_at: datetime

    def state(self, now: datetime) -> WindowState:
        if now < self.opens_at:
            return WindowState.NOT_YET
        if now > self.closes_at:
            return WindowState.CLOSED
        return WindowState.OPEN

    def is_open(self, now: datetime) -> bool:
        return self.state(now) is WindowState.OPEN


def join_window(
    *, starts_at: datetime, ends_at: datetime, before: timedelta, after: timedelta
) -> JoinWindow:
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise ValueError("join_window needs aware datetimes")
    return JoinWindow(opens_at=starts_at - before, closes_at=ends_at + after)
