"""Per-colour request statistics: status classes and a fixed-bucket latency histogram. Pure.

The data plane (Envoy's per-cluster statistics) is read into :class:`ColourStats`; two
snapshots subtracted give one window, which the analysis compares colour against colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bluegreen.dataplane.table import Colour

#: Upper bounds (seconds) of the latency histogram buckets; a final +Inf bucket is implied.
BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
STATUS_CLASSES: tuple[str, ...] = ("2xx", "3xx", "4xx", "5xx")

Group = Literal["pages", "api", "static"]
#: Route groups the data plane counts apart: ``api`` (``/api/``), ``static``
#: (``/static/``) and ``pages`` (everything else).
GROUPS: tuple[Group, ...] = ("pages", "api", "static")


def status_class(status: int) -> str:
    """``"2xx"`` … ``"5xx"`` for an HTTP status; 1xx is folded into 2xx (it only occurs
    for websocket upgrades, which are successful)."""
    if status < 300:
        return "2xx"
    if status < 400:
        return "3xx"
    if status < 500:
        return "4xx"
    return "5xx"


def bucket_index(seconds: float) -> int:
    """Index of the histogram bucket ``seconds`` falls in (``len(BUCKETS)`` is +Inf)."""
    for i, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return i
    return len(BUCKETS)


@dataclass(frozen=True, slots=True)
class ColourStats:
    """Cumulative totals for one colour at one instant.

    Subtract two snapshots (``later - earlier``) to get the stats of the window between
    them, then ask for :meth:`error_rate` and :meth:`p95`.
    """

    colour: Colour
    requests: int = 0
    by_class: tuple[tuple[str, int], ...] = ()
    errors: int = 0  # router-made 502/503s, also counted in 5xx
    buckets: tuple[int, ...] = (0,) * (len(BUCKETS) + 1)  # per bucket, not cumulative
    latency_sum: float = 0.0

    @property
    def server_errors(self) -> int:
        """5xx responses (including the router's own)."""
        return dict(self.by_class).get("5xx", 0)

    def count(self, cls: str) -> int:
        """Requests in status class ``cls`` (``"2xx"`` … ``"5xx"``, or ``"error"``)."""
        if cls == "error":
            return self.errors
        return dict(self.by_class).get(cls, 0)

    def __sub__(self, other: ColourStats) -> ColourStats:
        if not isinstance(other, ColourStats):
            return NotImplemented
        mine, theirs = dict(self.by_class), dict(other.by_class)
        return ColourStats(
            colour=self.colour,
            requests=self.requests - other.requests,
            by_class=tuple((c, mine.get(c, 0) - theirs.get(c, 0)) for c in STATUS_CLASSES),
            errors=self.errors - other.errors,
            buckets=tuple(a - b for a, b in zip(self.buckets, other.buckets, strict=True)),
            latency_sum=self.latency_sum - other.latency_sum,
        )

    def __add__(self, other: ColourStats) -> ColourStats:
        """Both together (e.g. the route groups of one colour); keeps this colour."""
        if not isinstance(other, ColourStats):
            return NotImplemented
        mine, theirs = dict(self.by_class), dict(other.by_class)
        return ColourStats(
            colour=self.colour,
            requests=self.requests + other.requests,
            by_class=tuple((c, mine.get(c, 0) + theirs.get(c, 0)) for c in STATUS_CLASSES),
            errors=self.errors + other.errors,
            buckets=tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
            latency_sum=self.latency_sum + other.latency_sum,
        )

    def error_rate(self) -> float:
        """Fraction of requests that were 5xx; 0.0 when there were none."""
        return self.server_errors / self.requests if self.requests > 0 else 0.0

    def quantile(self, q: float) -> float | None:
        """Approximate ``q``-quantile of latency in seconds, interpolated linearly inside
        the bucket like Prometheus' ``histogram_quantile``; ``None`` without samples.
        Samples in the +Inf bucket report the largest finite bound."""
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must be within [0, 1]")
        total = sum(self.buckets)
        if total <= 0:
            return None
        rank = q * total
        cumulative = 0
        for i, n in enumerate(self.buckets):
            if n <= 0:
                continue
            if cumulative + n >= rank:
                if i == len(BUCKETS):
                    return BUCKETS[-1]
                lower = BUCKETS[i - 1] if i > 0 else 0.0
                upper = BUCKETS[i]
                return lower + (upper - lower) * max(0.0, rank - cumulative) / n
            cumulative += n
        return BUCKETS[-1]

    def p95(self) -> float | None:
        """Approximate 95th percentile latency in seconds (``None`` without samples)."""
        return self.quantile(0.95)
