"""Embedded L7 router of bluegreen: routing table, balancer, metrics and the aiohttp proxy."""

from __future__ import annotations

from bluegreen.dataplane.stats import BUCKETS, ColourStats
from bluegreen.dataplane.table import COLOURS, EMPTY_TABLE, Backend, Colour, Mode, RoutingTable
from bluegreen.router.balancer import Balancer
from bluegreen.router.metrics import RouterMetrics
from bluegreen.router.proxy import HOP_BY_HOP, IDEMPOTENT_METHODS, REPLAY_LIMIT, Router

__all__ = [
    "BUCKETS",
    "COLOURS",
    "EMPTY_TABLE",
    "HOP_BY_HOP",
    "IDEMPOTENT_METHODS",
    "REPLAY_LIMIT",
    "Backend",
    "Balancer",
    "Colour",
    "ColourStats",
    "Mode",
    "Router",
    "RouterMetrics",
    "RoutingTable",
]
