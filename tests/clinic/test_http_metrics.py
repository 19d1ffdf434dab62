"""``/metrics``: counted by route template, method and status class, timed, labelled with colour
and release; served only on the separate metrics listener, never on the application's port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clinic.core.config import Settings
from conftest import RunningApp, serve


@pytest.fixture
async def metered(settings: Settings) -> AsyncIterator[tuple[RunningApp, str]]:
    """The clinic on a free port with its metrics listener on another free port."""
    settings = settings.model_copy(
        update={"metrics_port": 0, "release_id": "r-42", "color": "green"}
    )
    server, task, url = await serve(settings)
    app = server.config.app
    middleware = app.middleware_stack
    while middleware is not None and type(middleware).__name__ != "MetricsMiddleware":
        middleware = getattr(middleware, "app", None)
    assert middleware is not None and middleware.listener is not None
    yield RunningApp(url, settings), f"http://127.0.0.1:{middleware.listener.port}"
    server.should_exit = True
    await task


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                found[tuple(sorted(s.labels.items()))] = s.value
    return found


async def test_counts_by_route_template_method_and_status_class(
    metered: tuple[RunningApp, str],
) -> None:
    app, metrics_url = metered
    async with app.client() as client:
        for _ in range(3):
            assert (await client.get("/healthz/live")).status_code == 200
        # Two different ids, one route template: one series, not two.
        # Anonymous: refused, whichever 4xx the API picks.
        first = await client.get("/api/v1/appointments/101")
        second = await client.get("/api/v1/appointments/202")
        assert first.status_code == second.status_code
        assert 400 <= first.status_code < 500
        assert (await client.get("/no/such/page")).status_code == 404
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{metrics_url}/metrics")
    assert answer.status_code == 200
    counts = samples(answer.text, "clinic_http_requests_total")
    common = (("colour", "green"), ("method", "GET"), ("release", "r-42"))

    def key(route: str, status_class: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((*common, ("route", route), ("status_class", status_class))))

    assert counts[key("/healthz/live", "2xx")] == 3
    assert counts[key("/api/v1/appointments/{appointment_id}", "4xx")] == 2
    assert counts[key("unmatched", "4xx")] == 1
    assert not any("101" in dict(k)["route"] for k in counts)
    durations = samples(answer.text, "clinic_http_request_duration_seconds_count")
    live = (*common, ("route", "/healthz/live"))
    assert durations[tuple(sorted(live))] == 3
    buckets = samples(answer.text, "clinic_http_request_duration_seconds_bucket")
    inf = tuple(sorted((*live, ("le", "+Inf"))))
    assert buckets[inf] == 3


async def test_metrics_are_not_served_on_the_application_port(
    metered: tuple[RunningApp, str],
) -> None:
    app, metrics_url = metered
    async with app.client() as client:
        assert (await client.get("/metrics")).status_code == 404
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{metrics_url}/metrics")).text
    # The probe above was counted like any request, as an unmatched 404.
    assert 'route="unmatched"' in text and 'status_class="4xx"' in text


async def test_without_a_metrics_port_nothing_listens(app: RunningApp) -> None:
    assert app.settings.metrics_port is None
    async with app.client() as client:
        assert (await client.get("/metrics")).status_code == 404


async def test_a_failing_request_is_counted_as_5xx(settings: Settings) -> None:
    from fastapi import FastAPI

    from clinic.metrics import MetricsMiddleware

    inner = FastAPI()

    @inner.get("/boom/{n}")
    async def boom(n: int) -> None:
        raise RuntimeError("broken on purpose")

    middleware = MetricsMiddleware(inner, settings=settings)
    transport = httpx.ASGITransport(app=middleware, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/boom/1")).status_code == 500
    value = middleware.metrics.registry.get_sample_value(
        "clinic_http_requests_total",
        {
            "route": "/boom/{n}",
            "method": "GET",
            "status_class": "5xx",
            "colour": "",
            "release": settings.release_id,
        },
    )
    assert value == 1
