"""Prometheus metrics about the clinic's own HTTP traffic, served on a separate listener.

Every HTTP request is counted by route template, method and status class, and timed in a
latency histogram; every series carries the instance's colour and release, so a deploy can
compare the new colour with the old one per route.

Where ``/metrics`` is served: never on the application's port. The public listener (Envoy on
one host, the Ingress on Kubernetes) forwards every path to that port, so anything served there
would be public. With ``CLINIC_METRICS_PORT`` set, a second listener on
``CLINIC_METRICS_HOST:CLINIC_METRICS_PORT`` (default host 127.0.0.1) answers with the metrics
(Prometheus scrapes ``/metrics``) and serves nothing of the application; unset, there is no
listener (the counters still run). On
Kubernetes the pod listens on 0.0.0.0 and a NetworkPolicy admits only the monitoring namespace
to that port (docs/kubernetes.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_wsgi_server

from clinic.core.config import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUESTS = "clinic_http_requests"
DURATION = "clinic_http_request_duration_seconds"
UNMATCHED = "unmatched"
# Seconds; fine below 1 s, where the p95 of a healthy clinic lives.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


def status_class(status: int) -> str:
    """``"2xx"`` for 204 and so on."""
    return f"{status // 100}xx"


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/api/v1/appointments/{appointment_id}``), so the
    label set stays small whatever paths clients send."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class HttpMetrics:
    """The counter and histogram of one application (its own registry, so several apps in one
    process, as in the tests, do not collide)."""

    def __init__(self, *, colour: str, release: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.colour = colour
        self.release = release
        self.requests = Counter(
            REQUESTS,
            "HTTP requests answered, by route template, method and status class.",
            ("route", "method", "status_class", "colour", "release"),
            registry=self.registry,
        )
        self.duration = Histogram(
            DURATION,
            "Time from request to the end of the response body, by route template and method.",
            ("route", "method", "colour", "release"),
            buckets=BUCKETS,
            registry=self.registry,
        )

    def observe(self, *, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, status_class(status), self.colour, self.release).inc()
        self.duration.labels(route, method, self.colour, self.release).observe(seconds)


class MetricsListener:
    """The separate ``/metrics`` listener (a prometheus-client WSGI server on a thread)."""

    def __init__(self, registry: CollectorRegistry, *, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None

    def start(self) -> None:
        self._server, self._thread = start_wsgi_server(
            self.port, addr=self.host, registry=self.registry
        )
        self.port = int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None


class MetricsMiddleware:
    """Pure ASGI middleware: times and counts HTTP requests; runs the metrics listener for the
    application's lifespan when ``settings.metrics_port`` is set."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.metrics = HttpMetrics(colour=settings.color or "", release=settings.release_id)
        self.listener = (
            MetricsListener(
                self.metrics.registry, host=settings.metrics_host, port=settings.metrics_port
            )
            if settings.metrics_port is not None
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.listener is not None:
            await self._lifespan(self.listener, scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(
        self, listener: MetricsListener, scope: Scope, receive: Receive, send: Send
    ) -> None:
        async def receive_and_start() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                listener.start()
            return message

        try:
            await self.app(scope, receive_and_start, send)
        finally:
            listener.stop()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before it starts a response
        recorded = False

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self.metrics.observe(
                    route=route_template(scope),
                    method=scope["method"],
                    status=status,
                    seconds=time.perf_counter() - started,
                )

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record()

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            record()
