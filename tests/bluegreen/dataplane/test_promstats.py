"""Envoy's Prometheus text into per-colour stats."""

from __future__ import annotations

from bluegreen.dataplane.promstats import parse_colour_stats
from bluegreen.dataplane.stats import BUCKETS

TEXT = """
# TYPE envoy_cluster_upstream_cx_none_healthy counter
envoy_cluster_upstream_cx_none_healthy{envoy_cluster_name="blue"} 2
envoy_cluster_upstream_cx_none_healthy{envoy_cluster_name="green"} 0
# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="1",envoy_cluster_name="blue"} 1
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="blue"} 90
envoy_cluster_upstream_rq_xx{envoy_response_code_class="4",envoy_cluster_name="blue"} 4
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="blue"} 5
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="green"} 3
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="other"} 7
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="1"} 50
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="2.5"} 80
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="5"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="10"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="25"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="50"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="100"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="250"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="500"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="1000"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="2500"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="5000"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="10000"} 99
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="blue",le="+Inf"} 100
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="blue"} 15000
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="blue"} 100
"""


def test_counts_by_status_class_with_1xx_folded_into_2xx() -> None:
    stats = parse_colour_stats(TEXT)
    blue = stats["blue"]
    assert blue.count("2xx") == 91
    assert blue.count("4xx") == 4
    assert blue.count("5xx") == 5
    assert blue.requests == 100
    assert blue.errors == 2
    assert blue.error_rate() == 0.05
    assert stats["green"].requests == 3
    assert set(stats) == {"blue", "green"}


def test_cumulative_millisecond_buckets_become_per_bucket_seconds() -> None:
    blue = parse_colour_stats(TEXT)["blue"]
    assert len(blue.buckets) == len(BUCKETS) + 1
    assert blue.buckets[:3] == (50, 30, 19)
    assert blue.buckets[-1] == 1
    assert sum(blue.buckets) == 100
    assert blue.latency_sum == 15.0
    p95 = blue.p95()
    assert p95 is not None and 0.0025 < p95 <= 0.005


def test_no_stats_yet_is_all_zero() -> None:
    stats = parse_colour_stats("")
    assert stats["blue"].requests == 0
    assert stats["green"].p95() is None
