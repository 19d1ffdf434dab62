from __future__ import annotations

import dataclasses

import pytest

from bluegreen.router import EMPTY_TABLE, Backend, RoutingTable

B1 = Backend("blue-1", "blue", "127.0.0.1", 8001)
B2 = Backend("blue-2", "blue", "127.0.0.1", 8002, healthy=False)
G1 = Backend("green-1", "green", "127.0.0.1", 9001)


def table() -> RoutingTable:
    return RoutingTable(live="blue", preview="green", backends=(B1, B2, G1))


def test_healthy_filters_colour_and_health() -> None:
    t = table()
    assert t.healthy("blue") == (B1,)
    assert t.healthy("green") == (G1,)
    assert t.of_colour("blue") == (B1, B2)
    assert EMPTY_TABLE.healthy("blue") == ()


def test_with_methods_return_new_tables() -> None:
    t = table()
    switched = t.with_live("green").with_preview(None)
    assert (switched.live, switched.preview) == ("green", None)
    assert (t.live, t.preview) == ("blue", "green")  # original untouched
    assert switched.preview_colour() == "green"
    assert t.with_mode("paused").mode == "paused"
    assert t.mode == "serving"
    assert t.with_backends((G1,)).backends == (G1,)


def test_with_health_flips_one_backend() -> None:
    t = table().with_health("blue-2", True).with_health("blue-1", False)
    assert t.healthy("blue") == (dataclasses.replace(B2, healthy=True),)
    assert t.backend("blue-1") == dataclasses.replace(B1, healthy=False)
    with pytest.raises(KeyError):
        t.with_health("nope", True)


def test_with_colour_backends_keeps_other_colour() -> None:
    g2 = Backend("green-2", "green", "127.0.0.1", 9002)
    t = table().with_colour_backends("green", (g2,))
    assert t.of_colour("green") == (g2,)
    assert t.of_colour("blue") == (B1, B2)
    with pytest.raises(ValueError, match="green"):
        t.with_colour_backends("green", (B1,))


def test_preview_falls_back_to_live_and_duplicates_rejected() -> None:
    assert RoutingTable(live="blue", preview=None).preview_colour() == "blue"
    assert EMPTY_TABLE.preview_colour() is None
    with pytest.raises(ValueError, match="duplicate"):
        RoutingTable(live="blue", preview=None, backends=(B1, B1))


def test_tables_are_frozen() -> None:
    t = table()
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.live = "green"  # type: ignore[misc]
    assert B1.origin == "http://127.0.0.1:8001"
    assert Backend("x", "blue", "::1", 1).origin == "http://[::1]:1"
