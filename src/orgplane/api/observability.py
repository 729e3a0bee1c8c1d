"""The outermost ASGI layer: request ids, Prometheus metrics, one structured log line a request.

It wraps the whole application, so unrouted requests (404) are counted too; the route template
that Litestar's router writes into the scope labels the metrics, keeping their cardinality low.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from orgplane import logging as logs

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "orgplane_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "orgplane_request_duration_seconds",
            "Request latency by route",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.auth_failures = Counter(
            "orgplane_auth_failures",
            "Failed authentications by reason",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "orgplane_rate_limited",
            "Requests refused by a rate limit",
            ["limit"],
            registry=self.registry,
        )
        self.db_pool_checked_out = Gauge(
            "orgplane_db_pool_checked_out", "Database connections in use", registry=self.registry
        )
        self.db_pool_size = Gauge(
            "orgplane_db_pool_size", "Database connections held by the pool", registry=self.registry
        )
        # Routes are templates and statuses few, so this stays small.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count a request and its latency; the labelled series are looked up once each."""
        series = self._series.get((method, route, status))
        if series is None:
            series = self._series[(method, route, status)] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        series[0].inc()
        series[1].observe(seconds)


class ObservabilityMiddleware:
    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _REQUEST_ID.match(candidate) else None
                break
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope["method"]
            self.metrics.observe_request(method, route, status, elapsed)
            logs.request_log.info(
                "request",
                method=method,
                route=route,
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                request_id=request_id,
            )
