"""Traffic per colour over time, from the data plane's cumulative statistics.

The controller samples the data plane's per-colour :class:`ColourStats` (cumulative) about
once a second into a :class:`StatsHistory`. Differences of samples give a window (the
analysis baseline), per-second series (the dashboard's requests/s and 5xx/s per colour) and
the last minute's rates (``bluegreen status``). :func:`render_prometheus` writes the latest
sample for ``GET /metrics``. Everything here is pure.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from bluegreen.checks import Stats
from bluegreen.dataplane.stats import BUCKETS, STATUS_CLASSES, ColourStats
from bluegreen.dataplane.table import COLOURS, Colour

KEEP_SECONDS = 600


@dataclass(frozen=True, slots=True)
class Sample:
    """Both colours' cumulative stats at one instant (monotonic and wall-clock time)."""

    at: float
    wall: float
    stats: Mapping[Colour, ColourStats]

    def of(self, colour: Colour) -> ColourStats:
        return self.stats.get(colour) or ColourStats(colour=colour)


def window_baseline(
    ring: Sequence[tuple[float, ColourStats]], now_stats: ColourStats, now: float, window: float
) -> ColourStats:
    """``colour``'s traffic over the last ``window`` seconds, from a ring of
    ``(time, cumulative snapshot)`` samples (oldest first): ``now - sample``, where the
    sample is the newest one at least ``window`` old (or the oldest one there is)."""
    base: ColourStats | None = None
    for at, snap in ring:
        if at <= now - window:
            base = snap
        else:
            break
    if base is None:
        base = ring[0][1] if ring else ColourStats(colour=now_stats.colour)
    return now_stats - base


def to_stats(stats: ColourStats) -> Stats:
    """Data-plane figures in the shape :func:`bluegreen.checks.analyse` takes."""
    return Stats(requests=stats.requests, errors_5xx=stats.server_errors, p95_seconds=stats.p95())


class StatsHistory:
    """A ring of :class:`Sample` (the last :data:`KEEP_SECONDS` at one per second)."""

    def __init__(self, keep: int = KEEP_SECONDS * 2) -> None:
        self._ring: deque[Sample] = deque(maxlen=keep)

    def add(self, sample: Sample) -> None:
        """Append a sample (a data plane restarted from zero starts the series afresh)."""
        last = self._ring[-1] if self._ring else None
        if last is not None and any(sample.of(c).requests < last.of(c).requests for c in COLOURS):
            self._ring.clear()
        self._ring.append(sample)

    @property
    def latest(self) -> Sample | None:
        return self._ring[-1] if self._ring else None

    def baseline(self, colour: Colour, window: float) -> ColourStats:
        """``colour``'s traffic over the last ``window`` seconds before the latest sample."""
        if not self._ring:
            return ColourStats(colour=colour)
        *older, last = self._ring
        return window_baseline(
            [(s.at, s.of(colour)) for s in older], last.of(colour), last.at, window
        )

    def series(self, colour: Colour, seconds: int) -> list[tuple[int, int, int]]:
        """``(epoch second, requests, 5xx)`` per second over the last ``seconds``, from the
        differences of consecutive samples."""
        out: dict[int, tuple[int, int]] = {}
        samples = list(self._ring)
        if not samples:
            return []
        start = samples[-1].wall - seconds
        for a, b in itertools.pairwise(samples):
            if b.wall < start:
                continue
            d = b.of(colour) - a.of(colour)
            second = int(b.wall)
            r, e = out.get(second, (0, 0))
            out[second] = (r + d.requests, e + d.server_errors)
        return [(s, r, e) for s, (r, e) in sorted(out.items())]

    def rates(self, colour: Colour, seconds: float = 60.0) -> tuple[float, float]:
        """``(requests/s, 5xx/s)`` over the last ``seconds`` (0 without two samples)."""
        samples = list(self._ring)
        if len(samples) < 2:
            return 0.0, 0.0
        last = samples[-1]
        first = next((s for s in samples if s.at >= last.at - seconds), samples[0])
        span = last.at - first.at
        if span <= 0:
            return 0.0, 0.0
        d = last.of(colour) - first.of(colour)
        return d.requests / span, d.server_errors / span


def render_prometheus(sample: Sample | None) -> str:
    """The latest per-colour figures in Prometheus text format 0.0.4."""
    return "".join(_render(sample))


def _render(sample: Sample | None) -> Iterator[str]:
    name = "bluegreen_requests_total"
    yield f"# HELP {name} Responses by colour and status class, from the data plane.\n"
    yield f"# TYPE {name} counter\n"
    for colour in COLOURS:
        s = sample.of(colour) if sample else ColourStats(colour=colour)
        for cls in STATUS_CLASSES:
            yield f'{name}{{colour="{colour}",class="{cls}"}} {s.count(cls)}\n'
    name = "bluegreen_request_duration_seconds"
    yield f"# HELP {name} Request latency by colour, seconds, from the data plane.\n"
    yield f"# TYPE {name} histogram\n"
    for colour in COLOURS:
        s = sample.of(colour) if sample else ColourStats(colour=colour)
        cumulative = 0
        for bound, n in zip((*BUCKETS, math.inf), s.buckets, strict=True):
            cumulative += n
            le = "+Inf" if math.isinf(bound) else repr(bound)
            yield f'{name}_bucket{{colour="{colour}",le="{le}"}} {cumulative}\n'
        yield f'{name}_sum{{colour="{colour}"}} {s.latency_sum!r}\n'
        yield f'{name}_count{{colour="{colour}"}} {cumulative}\n'
