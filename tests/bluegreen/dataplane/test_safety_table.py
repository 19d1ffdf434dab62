"""Shadow and phased-switch settings of the routing table, and their statistics. Pure."""

from __future__ import annotations

import pytest

from bluegreen.dataplane.promstats import parse_group_stats, parse_shadow_stats
from bluegreen.dataplane.resources import public_routes, routes, sticky_cookie
from bluegreen.dataplane.settings import DataPlaneSettings
from bluegreen.dataplane.stats import ColourStats
from bluegreen.dataplane.table import Backend, RoutingTable, Shadow, Weights

S = DataPlaneSettings()
T = RoutingTable(
    live="blue",
    preview="green",
    backends=(Backend("b1", "blue", "127.0.0.1", 1), Backend("g1", "green", "127.0.0.1", 2)),
)


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_shadow_share_must_be_a_fraction(share: float) -> None:
    with pytest.raises(ValueError, match="share"):
        Shadow("green", share)


@pytest.mark.parametrize("percent", [-1, 101, 10.5, True])
def test_weight_must_be_a_whole_percent(percent: int) -> None:
    with pytest.raises(ValueError, match="weight"):
        Weights("green", percent)


def test_split_only_strictly_between_0_and_100_and_to_the_other_colour() -> None:
    assert T.split() is None and T.public_colour() == "blue"
    assert T.with_weights(Weights("green", 30)).split() == ("green", "blue", 30)
    assert T.with_weights(Weights("green", 30)).public_colour() is None
    assert T.with_weights(Weights("green", 0)).public_colour() == "blue"
    assert T.with_weights(Weights("green", 100)).public_colour() == "green"
    assert T.with_weights(Weights("blue", 30)).split() is None  # the candidate is live
    assert T.with_live(None).with_weights(Weights("green", 30)).split() is None


def _mirrors(entries: list[dict[str, object]]) -> list[object]:
    # Direct answers (the refusal of a forged shadow Host) have no "route": nothing to mirror.
    return [e.get("route", {}).get("request_mirror_policies") for e in entries]  # type: ignore[attr-defined]


def test_only_get_and_head_routes_mirror_and_never_to_the_colour_served() -> None:
    entries = public_routes(T.with_shadow(Shadow("green", 0.5)), S, secure=False)
    mirrored = [e for e in entries if e["route"].get("request_mirror_policies")]
    assert len(mirrored) == 3  # one per route group
    for e in mirrored:
        (method,) = e["match"]["headers"]
        assert method["string_match"]["safe_regex"]["regex"] == "GET|HEAD"
        (policy,) = e["route"]["request_mirror_policies"]
        assert policy["cluster"].startswith("green-shadow-")
        assert policy["runtime_fraction"]["default_value"]["numerator"] == 500_000
    # Shadowing the colour that already serves mirrors nothing; preview never mirrors.
    assert not any(_mirrors(public_routes(T.with_shadow(Shadow("blue", 1.0)), S, secure=False)))
    preview = routes("preview", T.with_shadow(Shadow("green", 1.0)), S)
    assert not any(_mirrors(preview["virtual_hosts"][0]["routes"]))


def test_the_stickiness_cookie_is_secure_only_on_https() -> None:
    assert sticky_cookie("green", False) == "bg-colour=green; Path=/; HttpOnly; SameSite=Lax"
    assert sticky_cookie("blue", True).endswith("; Secure")


PROM = """
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="green-shadow-api"} 4
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="green-shadow-api"} 1
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="green"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="green-shadow-api",le="1"} 2
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="green-shadow-api",le="+Inf"} 5
envoy_vhost_route_upstream_rq_xx{envoy_response_code_class="2",envoy_virtual_host="public",envoy_route="blue_api"} 6
envoy_vhost_route_upstream_rq_xx{envoy_response_code_class="2",envoy_virtual_host="preview",envoy_route="blue_api"} 50
envoy_vhost_route_upstream_rq_xx{envoy_response_code_class="3",envoy_virtual_host="public",envoy_route="green_static"} 2
envoy_vhost_route_upstream_rq_xx{envoy_response_code_class="2",envoy_virtual_host="public",envoy_route="split_pages"} 8
"""  # noqa: E501


def test_shadow_stats_are_per_target_colour_and_group() -> None:
    stats = parse_shadow_stats(PROM)
    api = stats[("green", "api")]
    assert (api.requests, api.server_errors, sum(api.buckets)) == (5, 1, 5)
    assert api.buckets[0] == 2
    assert stats[("green", "pages")].requests == 0  # the colour's own cluster is apart
    assert len(stats) == 6


def test_group_stats_count_public_routes_only() -> None:
    stats = parse_group_stats(PROM)
    assert stats[("blue", "api")].requests == 6  # preview's 50 are not users
    assert stats[("green", "static")].count("3xx") == 2
    assert sum(s.requests for s in stats.values()) == 8  # "split" has no colour


def test_colour_stats_add_up() -> None:
    a = ColourStats("green", 2, (("2xx", 2),), 0, (1,) + (0,) * 13, 0.5)
    total = a + a
    assert (total.requests, total.count("2xx"), total.buckets[0], total.latency_sum) == (
        4,
        4,
        2,
        1.0,
    )
