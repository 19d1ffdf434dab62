"""Envoy's per-cluster Prometheus stats read into :class:`ColourStats`. Pure.

The cluster of each colour counts responses by status class
(``envoy_cluster_upstream_rq_xx``) and times them (``envoy_cluster_upstream_rq_time``,
milliseconds, buckets set in the bootstrap to :data:`stats.BUCKETS`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bluegreen.dataplane.stats import BUCKETS, GROUPS, STATUS_CLASSES, ColourStats, Group
from bluegreen.dataplane.table import COLOURS, Colour

#: Envoy stat names (before Prometheus naming) that :func:`parse_colour_stats` reads.
STATS_FILTER = r"^cluster\.(blue|green)\.(upstream_rq_([1-5]xx|time)|upstream_cx_none_healthy)$"
#: What :func:`parse_shadow_stats` and :func:`parse_group_stats` read.
DETAIL_FILTER = (
    r"^(cluster\.(blue|green)-shadow-[a-z]+\.(upstream_rq_([1-5]xx|time)|upstream_cx_none_healthy)"
    r"|vhost\.public\.route\.(blue|green)_[a-z]+\.upstream_rq_([1-5]xx|time))$"
)

_LINE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_colour_stats(text: str) -> dict[Colour, ColourStats]:
    """Cumulative stats of each colour from ``/stats/prometheus`` text."""
    read = _read(text, lambda labels: labels.get("envoy_cluster_name"), cluster=True)
    return {c: read.get(c, _Acc()).stats(c) for c in COLOURS}


def _read(
    text: str, key_of: Callable[[dict[str, str]], str | None], *, cluster: bool
) -> dict[str, _Acc]:
    """Accumulate the lines whose labels ``key_of`` maps to a key, by that key."""
    prefix = "envoy_cluster_" if cluster else "envoy_vhost_route_"
    result: dict[str, _Acc] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None or not m["name"].startswith(prefix):
            continue
        labels = dict(_LABEL.findall(m["labels"] or ""))
        key = key_of(labels)
        if key is None:
            continue
        result.setdefault(key, _Acc()).add(m["name"][len(prefix) :], labels, float(m["value"]))
    return result


@dataclass
class _Acc:
    """Counters of one cluster or route while the text is read."""

    classes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUS_CLASSES, 0))
    cumulative: dict[float, int] = field(default_factory=dict)
    latency_sum: float = 0.0
    errors: int = 0

    def add(self, name: str, labels: dict[str, str], value: float) -> None:
        if name == "upstream_rq_xx":
            code = labels.get("envoy_response_code_class", "")
            cls = "2xx" if code == "1" else f"{code}xx"
            if cls in self.classes:
                self.classes[cls] += int(value)
        elif name == "upstream_rq_time_bucket":
            le = labels.get("le", "")
            bound = float("inf") if le == "+Inf" else float(le) / 1000
            self.cumulative[bound] = self.cumulative.get(bound, 0) + int(value)
        elif name == "upstream_rq_time_sum":
            self.latency_sum += value / 1000
        elif name == "upstream_cx_none_healthy":
            self.errors += int(value)

    def stats(self, colour: Colour) -> ColourStats:
        return ColourStats(
            colour=colour,
            requests=sum(self.classes.values()),
            by_class=tuple(self.classes.items()),
            errors=self.errors,
            buckets=_per_bucket(self.cumulative),
            latency_sum=self.latency_sum,
        )


def parse_shadow_stats(text: str) -> dict[tuple[Colour, Group], ColourStats]:
    """Cumulative stats of the mirrored requests, by (target colour, route group), from
    the shadow clusters (``green-shadow-api`` …)."""
    read = _read(text, lambda labels: labels.get("envoy_cluster_name"), cluster=True)
    return {(c, g): read.get(f"{c}-shadow-{g}", _Acc()).stats(c) for c in COLOURS for g in GROUPS}


def parse_group_stats(text: str) -> dict[tuple[Colour, Group], ColourStats]:
    """Cumulative stats of the public listeners' requests, by (colour, route group), from
    the routes' statistics (``vhost.public.route.<colour>_<group>``). Preview traffic is
    not counted; neither are the first requests of new sessions during a phased switch
    (their colour is picked after routing: they count under ``split_<group>``)."""

    def key(labels: dict[str, str]) -> str | None:
        if labels.get("envoy_virtual_host") != "public":
            return None
        return labels.get("envoy_route")

    read = _read(text, key, cluster=False)
    return {(c, g): read.get(f"{c}_{g}", _Acc()).stats(c) for c in COLOURS for g in GROUPS}


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
