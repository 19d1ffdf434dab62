"""Router metrics: counters, latency histograms and Prometheus text rendering. Pure, no I/O.

Per colour and per backend the router counts requests by status class, a fixed-bucket
latency histogram, in-flight requests and open websockets. Responses the router made
itself (502/503) are counted in their status class (5xx) *and* in ``error``, so a
5xx rate always includes them while ``error`` tells them apart from app errors.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bluegreen.dataplane.stats import (
    BUCKETS,
    STATUS_CLASSES,
    ColourStats,
    bucket_index,
    status_class,
)
from bluegreen.dataplane.table import COLOURS, Colour

#: How many seconds of per-second history ``series`` keeps (10 minutes).
SERIES_SECONDS = 600


@dataclass(slots=True)
class _Stats:
    """Mutable counters for one colour or one backend."""

    by_class: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUS_CLASSES, 0))
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    in_flight: int = 0
    websockets: int = 0
    connect_errors: int = 0

    @property
    def requests(self) -> int:
        return sum(self.by_class.values())

    def observe(self, status: int, seconds: float, router_error: bool) -> None:
        self.by_class[status_class(status)] += 1
        if router_error:
            self.errors += 1
        self.buckets[bucket_index(seconds)] += 1
        self.latency_sum += seconds


class RouterMetrics:
    """All router metrics. The router calls the ``*_started``/``*_finished``/``observe``
    hooks; readers use :meth:`snapshot`, :meth:`series` and :meth:`render_prometheus`.

    ``clock`` returns epoch seconds and exists so the per-second series can be tested.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._colours: dict[Colour, _Stats] = {c: _Stats() for c in COLOURS}
        self._backends: dict[str, tuple[Colour, _Stats]] = {}
        # Per colour: deque of [epoch_second, requests, 5xx], oldest first.
        self._series: dict[Colour, deque[list[int]]] = {c: deque() for c in COLOURS}
        self.unrouted: dict[str, int] = {}  # reason -> count of 503s with no colour to blame
        self.retries = 0

    # -- hooks called by the router ---------------------------------------------------

    def _backend(self, colour: Colour, backend_id: str) -> _Stats:
        entry = self._backends.get(backend_id)
        if entry is None or entry[0] != colour:
            entry = (colour, _Stats())
            self._backends[backend_id] = entry
        return entry[1]

    def request_started(self, colour: Colour, backend_id: str | None = None) -> None:
        """A request of ``colour`` (optionally on a backend) is now in flight."""
        if backend_id is None:
            self._colours[colour].in_flight += 1
        else:
            self._backend(colour, backend_id).in_flight += 1

    def request_finished(self, colour: Colour, backend_id: str | None = None) -> None:
        """Undo :meth:`request_started` with the same arguments."""
        stats = self._colours[colour] if backend_id is None else self._backend(colour, backend_id)
        stats.in_flight = max(0, stats.in_flight - 1)

    def websocket_opened(self, colour: Colour, backend_id: str) -> None:
        """A proxied websocket is open."""
        self._colours[colour].websockets += 1
        self._backend(colour, backend_id).websockets += 1

    def websocket_closed(self, colour: Colour, backend_id: str) -> None:
        """Undo :meth:`websocket_opened`."""
        c, b = self._colours[colour], self._backend(colour, backend_id)
        c.websockets = max(0, c.websockets - 1)
        b.websockets = max(0, b.websockets - 1)

    def connect_error(self, colour: Colour, backend_id: str) -> None:
        """Connecting to a backend failed."""
        self._backend(colour, backend_id).connect_errors += 1

    def observe(
        self,
        colour: Colour,
        backend_id: str | None,
        status: int,
        seconds: float,
        *,
        router_error: bool = False,
    ) -> None:
        """Count one finished request: status, latency, and whether the router made it."""
        self._colours[colour].observe(status, seconds, router_error)
        if backend_id is not None:
            self._backend(colour, backend_id).observe(status, seconds, router_error)
        self._tick(colour, status >= 500)

    def observe_unrouted(self, reason: str) -> None:
        """Count a 503 that no colour is to blame for (nothing live, maintenance, pause)."""
        self.unrouted[reason] = self.unrouted.get(reason, 0) + 1

    def _tick(self, colour: Colour, is_5xx: bool) -> None:
        now = int(self._clock())
        series = self._series[colour]
        if series and series[-1][0] == now:
            last = series[-1]
        else:
            last = [now, 0, 0]
            series.append(last)
        last[1] += 1
        if is_5xx:
            last[2] += 1
        self._trim(series, now)

    @staticmethod
    def _trim(series: deque[list[int]], now: int) -> None:
        while series and series[0][0] <= now - SERIES_SECONDS:
            series.popleft()

    # -- readers ----------------------------------------------------------------------

    def in_flight(self, colour: Colour) -> int:
        """Requests of ``colour`` currently in flight."""
        return self._colours[colour].in_flight

    def open_websockets(self, colour: Colour) -> int:
        """Websockets of ``colour`` currently open."""
        return self._colours[colour].websockets

    def snapshot(self, colour: Colour) -> ColourStats:
        """Cumulative totals for ``colour`` now; diff two of them for a window."""
        s = self._colours[colour]
        return ColourStats(
            colour=colour,
            requests=s.requests,
            by_class=tuple((c, s.by_class[c]) for c in STATUS_CLASSES),
            errors=s.errors,
            buckets=tuple(s.buckets),
            latency_sum=s.latency_sum,
        )

    def backend_snapshot(self, backend_id: str) -> ColourStats | None:
        """Cumulative totals for one backend, or ``None`` if it has seen nothing yet."""
        entry = self._backends.get(backend_id)
        if entry is None:
            return None
        colour, s = entry
        return ColourStats(
            colour=colour,
            requests=s.requests,
            by_class=tuple((c, s.by_class[c]) for c in STATUS_CLASSES),
            errors=s.errors,
            buckets=tuple(s.buckets),
            latency_sum=s.latency_sum,
        )

    def series(self, colour: Colour) -> list[tuple[int, int, int]]:
        """``(epoch_second, requests, 5xx)`` for every second of the last 10 minutes from
        the first second that saw traffic up to now, gaps filled with zeros."""
        now = int(self._clock())
        series = self._series[colour]
        self._trim(series, now)
        if not series:
            return []
        by_second = {s: (r, e) for s, r, e in series}
        start = series[0][0]
        return [(s, *by_second.get(s, (0, 0))) for s in range(start, now + 1)]

    def render_prometheus(self) -> str:
        """All metrics in Prometheus text exposition format 0.0.4."""
        return "".join(self._render())

    def _render(self) -> Iterator[str]:
        backends = sorted(self._backends.items())
        p = "bluegreen_router_"

        yield _help(p + "requests_total", "counter", "Responses sent, by colour and status class.")
        for colour, s in self._colours.items():
            for cls in STATUS_CLASSES:
                yield _line(p + "requests_total", {"colour": colour, "class": cls}, s.by_class[cls])
        yield _help(
            p + "router_errors_total",
            "counter",
            "502/503 responses made by the router itself (also counted in requests_total 5xx).",
        )
        for colour, s in self._colours.items():
            yield _line(p + "router_errors_total", {"colour": colour}, s.errors)
        yield _help(
            p + "backend_requests_total", "counter", "Responses sent, by backend and status class."
        )
        for bid, (colour, s) in backends:
            for cls in STATUS_CLASSES:
                labels = {"colour": colour, "backend": bid, "class": cls}
                yield _line(p + "backend_requests_total", labels, s.by_class[cls])
        yield _help(
            p + "backend_connect_errors_total", "counter", "Failed connections to a backend."
        )
        for bid, (colour, s) in backends:
            labels = {"colour": colour, "backend": bid}
            yield _line(p + "backend_connect_errors_total", labels, s.connect_errors)
        yield _help(p + "retries_total", "counter", "Requests retried on another backend.")
        yield _line(p + "retries_total", {}, self.retries)
        yield _help(p + "unrouted_total", "counter", "503s with no colour to blame, by reason.")
        for reason, n in sorted(self.unrouted.items()):
            yield _line(p + "unrouted_total", {"reason": reason}, n)

        name = p + "request_duration_seconds"
        yield _help(name, "histogram", "Request latency by colour, seconds.")
        for colour, s in self._colours.items():
            yield from _histogram(name, {"colour": colour}, s)
        name = p + "backend_request_duration_seconds"
        yield _help(name, "histogram", "Request latency by backend, seconds.")
        for bid, (colour, s) in backends:
            yield from _histogram(name, {"colour": colour, "backend": bid}, s)

        yield _help(p + "in_flight_requests", "gauge", "HTTP requests in flight, by colour.")
        for colour, s in self._colours.items():
            yield _line(p + "in_flight_requests", {"colour": colour}, s.in_flight)
        yield _help(
            p + "backend_in_flight_requests", "gauge", "HTTP requests in flight, by backend."
        )
        for bid, (colour, s) in backends:
            labels = {"colour": colour, "backend": bid}
            yield _line(p + "backend_in_flight_requests", labels, s.in_flight)
        yield _help(p + "open_websockets", "gauge", "Proxied websockets open, by colour.")
        for colour, s in self._colours.items():
            yield _line(p + "open_websockets", {"colour": colour}, s.websockets)
        yield _help(p + "backend_open_websockets", "gauge", "Proxied websockets open, by backend.")
        for bid, (colour, s) in backends:
            labels = {"colour": colour, "backend": bid}
            yield _line(p + "backend_open_websockets", labels, s.websockets)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _line(name: str, labels: dict[str, str], value: float) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {_fmt(value)}\n"
    return f"{name} {_fmt(value)}\n"


def _help(name: str, kind: str, text: str) -> str:
    return f"# HELP {name} {text}\n# TYPE {name} {kind}\n"


def _histogram(name: str, labels: dict[str, str], s: _Stats) -> Iterator[str]:
    cumulative = 0
    for bound, n in zip((*BUCKETS, math.inf), s.buckets, strict=True):
        cumulative += n
        le = "+Inf" if math.isinf(bound) else repr(bound)
        yield _line(name + "_bucket", {**labels, "le": le}, cumulative)
    yield _line(name + "_sum", labels, s.latency_sum)
    yield _line(name + "_count", labels, cumulative)
