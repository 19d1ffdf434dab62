"""Registration is throttled per address and for the whole instance, before any work is done.

A registration costs a password hash (argon2: deliberately slow) and a row; a flood of them
must not starve everything else the instance serves, health checks included. Requests over
either budget are answered 429 with ``Retry-After`` at once, before the body is read or any
password hashed. Budgets are token buckets kept in memory per instance: with N instances the
global budget is N times the setting, which is still a bound.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from clinic.core.config import Settings
from clinic.core.errors import TooManyAttempts

REGISTRATION_PATHS = frozenset(
    {"/api/v1/patients", "/api/v1/doctors", "/register", "/register/doctor"}
)
MAX_ADDRESSES = 10_000
"""Addresses remembered at most; the least recently seen are forgotten first."""


@dataclass
class Bucket:
    """``capacity`` requests at once, refilled at ``capacity`` per ``period`` seconds."""

    capacity: int
    period: float
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """0 when a request may go ahead (and is counted), else seconds until one may."""
        rate = self.capacity / self.period
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / rate


class RegistrationThrottle:
    """Per-address and global budgets for the registration endpoints (pure, clock injected)."""

    def __init__(
        self,
        *,
        per_address: int,
        total: int,
        period: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_address, self.period, self.clock = per_address, period, clock
        self.total = Bucket(total, period, total, clock())
        self.addresses: OrderedDict[str, Bucket] = OrderedDict()

    def wait(self, address: str) -> float:
        """0 when ``address`` may register now (and it is counted), else seconds to wait."""
        now = self.clock()
        bucket = self.addresses.pop(address, None) or Bucket(
            self.per_address, self.period, self.per_address, now
        )
        self.addresses[address] = bucket
        while len(self.addresses) > MAX_ADDRESSES:
            self.addresses.popitem(last=False)
        own = bucket.take(now)
        if own:
            return own
        return self.total.take(now)


def registration_throttle(settings: Settings) -> RegistrationThrottle:
    return RegistrationThrottle(
        per_address=settings.register_per_address,
        total=settings.register_total,
        period=settings.register_period.total_seconds(),
    )


class ThrottleRegistrations:
    """ASGI middleware answering registrations over budget with 429 (envelope or page)."""

    def __init__(self, app: ASGIApp, throttle: RegistrationThrottle) -> None:
        self.app = app
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in REGISTRATION_PATHS
        ):
            client = scope.get("client")
            wait = self.throttle.wait(client[0] if client else "unknown")
            if wait:
                from clinic.web.errors import clinic_error

                error = TooManyAttempts(
                    "Too many registrations; try again later.", retry_after=math.ceil(wait)
                )
                response = await clinic_error(Request(scope, receive), error)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
