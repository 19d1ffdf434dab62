from __future__ import annotations

import pytest

from bluegreen.dataplane.stats import bucket_index, status_class
from bluegreen.router import BUCKETS, ColourStats, RouterMetrics


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_status_classes_and_buckets() -> None:
    assert [status_class(s) for s in (101, 200, 302, 404, 502)] == [
        "2xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
    ]
    assert bucket_index(0.0005) == 0
    assert bucket_index(0.001) == 0
    assert bucket_index(0.002) == 1
    assert bucket_index(11.0) == len(BUCKETS)


def test_counts_by_class_and_router_errors() -> None:
    m = RouterMetrics()
    m.observe("blue", "blue-1", 200, 0.01)
    m.observe("blue", "blue-1", 404, 0.01)
    m.observe("blue", "blue-2", 500, 0.01)
    m.observe("blue", None, 502, 0.01, router_error=True)
    m.observe("green", "green-1", 301, 0.01)
    s = m.snapshot("blue")
    assert s.requests == 4
    assert (s.count("2xx"), s.count("4xx"), s.count("5xx"), s.count("error")) == (1, 1, 2, 1)
    assert s.error_rate() == pytest.approx(0.5)
    assert m.snapshot("green").count("3xx") == 1
    b1 = m.backend_snapshot("blue-1")
    assert b1 is not None and b1.requests == 2
    assert m.backend_snapshot("unknown") is None


def test_snapshot_delta_rate_and_p95() -> None:
    m = RouterMetrics()
    for _ in range(100):
        m.observe("green", "green-1", 200, 2.0)  # slow history, outside the window
    before = m.snapshot("green")
    for _ in range(95):
        m.observe("green", "green-1", 200, 0.003)  # bucket (0.0025, 0.005]
    for _ in range(5):
        m.observe("green", "green-1", 503, 0.2)  # bucket (0.1, 0.25]
    window = m.snapshot("green") - before
    assert window.requests == 100
    assert window.server_errors == 5
    assert window.error_rate() == pytest.approx(0.05)
    p95 = window.p95()
    assert p95 is not None and 0.0025 < p95 <= 0.005
    # Without the subtraction the old slow requests dominate.
    total_p95 = m.snapshot("green").p95()
    assert total_p95 is not None and total_p95 > 1.0


def test_empty_window() -> None:
    s = ColourStats("blue")
    assert s.p95() is None
    assert s.error_rate() == 0.0
    assert (s - s).requests == 0
    with pytest.raises(ValueError):
        s.quantile(1.5)


def test_quantile_in_inf_bucket_reports_largest_bound() -> None:
    m = RouterMetrics()
    m.observe("blue", "b", 200, 60.0)
    assert m.snapshot("blue").p95() == BUCKETS[-1]


def test_in_flight_and_websocket_gauges() -> None:
    m = RouterMetrics()
    m.request_started("blue")
    m.request_started("blue", "blue-1")
    m.websocket_opened("blue", "blue-1")
    assert m.in_flight("blue") == 1
    assert m.open_websockets("blue") == 1
    text = m.render_prometheus()
    assert 'bluegreen_router_in_flight_requests{colour="blue"} 1' in text
    assert 'bluegreen_router_backend_in_flight_requests{colour="blue",backend="blue-1"} 1' in text
    assert 'bluegreen_router_open_websockets{colour="blue"} 1' in text
    m.request_finished("blue")
    m.request_finished("blue", "blue-1")
    m.websocket_closed("blue", "blue-1")
    m.request_finished("blue")  # extra finish must not go negative
    assert m.in_flight("blue") == 0
    assert m.open_websockets("blue") == 0


def test_prometheus_text() -> None:
    m = RouterMetrics()
    m.observe("blue", "blue-1", 200, 0.004)
    m.observe("blue", None, 503, 0.0001, router_error=True)
    m.connect_error("blue", "blue-1")
    m.observe_unrouted("maintenance")
    text = m.render_prometheus()
    lines = text.splitlines()
    assert "# TYPE bluegreen_router_requests_total counter" in lines
    assert 'bluegreen_router_requests_total{colour="blue",class="2xx"} 1' in lines
    assert 'bluegreen_router_requests_total{colour="blue",class="5xx"} 1' in lines
    assert 'bluegreen_router_router_errors_total{colour="blue"} 1' in lines
    assert (
        'bluegreen_router_backend_requests_total{colour="blue",backend="blue-1",class="2xx"} 1'
        in lines
    )
    assert (
        'bluegreen_router_backend_connect_errors_total{colour="blue",backend="blue-1"} 1' in lines
    )
    assert 'bluegreen_router_unrouted_total{reason="maintenance"} 1' in lines
    assert "# TYPE bluegreen_router_request_duration_seconds histogram" in lines
    h = "bluegreen_router_request_duration_seconds"
    assert f'{h}_bucket{{colour="blue",le="0.001"}} 1' in lines
    assert f'{h}_bucket{{colour="blue",le="0.0025"}} 1' in lines
    assert f'{h}_bucket{{colour="blue",le="0.005"}} 2' in lines
    assert f'{h}_bucket{{colour="blue",le="+Inf"}} 2' in lines
    assert f'{h}_count{{colour="blue"}} 2' in lines
    assert f'{h}_count{{colour="green"}} 0' in lines
    assert text.endswith("\n")
    # every non-comment line is "name{labels} value" with a numeric value
    for line in lines:
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1].replace("+Inf", "inf"))


def test_label_values_are_escaped() -> None:
    m = RouterMetrics()
    m.observe_unrouted('we"ird\\')
    assert 'reason="we\\"ird\\\\"' in m.render_prometheus()


def test_series_per_second_with_gaps_and_window() -> None:
    clock = Clock(1_000_000.2)
    m = RouterMetrics(clock=clock)
    m.observe("blue", "b", 200, 0.01)
    m.observe("blue", "b", 500, 0.01)
    clock.t = 1_000_002.7
    m.observe("blue", "b", 200, 0.01)
    assert m.series("blue") == [
        (1_000_000, 2, 1),
        (1_000_001, 0, 0),
        (1_000_002, 1, 0),
    ]
    assert m.series("green") == []
    clock.t = 1_000_000 + 600.5  # first second falls out of the 10 minute window
    series = m.series("blue")
    assert series[0] == (1_000_002, 1, 0)
    assert series[-1] == (1_000_600, 0, 0)
    assert len(series) == 599
