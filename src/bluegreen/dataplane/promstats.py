"""Envoy's per-cluster Prometheus stats read into :class:`ColourStats`. Pure.

The cluster of each colour counts responses by status class
(``envoy_cluster_upstream_rq_xx``) and times them (``envoy_cluster_upstream_rq_time``,
milliseconds, buckets set in the bootstrap to :data:`stats.BUCKETS`).
"""

from __future__ import annotations

import math
import re

from bluegreen.dataplane.stats import BUCKETS, STATUS_CLASSES, ColourStats
from bluegreen.dataplane.table import COLOURS, Colour

#: Envoy stat names (before Prometheus naming) that :func:`parse_colour_stats` reads.
STATS_FILTER = r"^cluster\.(blue|green)\.(upstream_rq_([1-5]xx|time)|upstream_cx_none_healthy)$"

_LINE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_colour_stats(text: str) -> dict[Colour, ColourStats]:
    """Cumulative stats of each colour from ``/stats/prometheus`` text."""
    classes: dict[Colour, dict[str, int]] = {c: dict.fromkeys(STATUS_CLASSES, 0) for c in COLOURS}
    cumulative: dict[Colour, dict[float, int]] = {c: {} for c in COLOURS}
    sums: dict[Colour, float] = dict.fromkeys(COLOURS, 0.0)
    errors: dict[Colour, int] = dict.fromkeys(COLOURS, 0)
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        labels = dict(_LABEL.findall(m["labels"] or ""))
        colour = labels.get("envoy_cluster_name")
        if colour not in COLOURS:
            continue
        c: Colour = colour
        name, value = m["name"], float(m["value"])
        if name == "envoy_cluster_upstream_rq_xx":
            code = labels.get("envoy_response_code_class", "")
            cls = "2xx" if code == "1" else f"{code}xx"
            if cls in classes[c]:
                classes[c][cls] += int(value)
        elif name == "envoy_cluster_upstream_rq_time_bucket":
            le = labels.get("le", "")
            cumulative[c][float("inf") if le == "+Inf" else float(le) / 1000] = int(value)
        elif name == "envoy_cluster_upstream_rq_time_sum":
            sums[c] = value / 1000
        elif name == "envoy_cluster_upstream_cx_none_healthy":
            errors[c] = int(value)
    return {
        c: ColourStats(
            colour=c,
            requests=sum(classes[c].values()),
            by_class=tuple(classes[c].items()),
            errors=errors[c],
            buckets=_per_bucket(cumulative[c]),
            latency_sum=sums[c],
        )
        for c in COLOURS
    }


def _per_bucket(cumulative: dict[float, int]) -> tuple[int, ...]:
    """Prometheus' cumulative ``le`` counts to one count per :data:`BUCKETS` bucket."""
    result: list[int] = []
    previous = 0
    for bound in (*BUCKETS, math.inf):
        # Envoy's bounds are the same numbers in ms; match them within float noise.
        total = next(
            (n for le, n in cumulative.items() if le == bound or math.isclose(le, bound)),
            previous,
        )
        result.append(max(0, total - previous))
        previous = max(previous, total)
    return tuple(result)
