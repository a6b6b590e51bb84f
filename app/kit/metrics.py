"""Prometheus metrics, in a registry per app so that tests and replicas stay independent."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The *_created series double the output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "radar_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "radar_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.events = Counter(
            "radar_events_total",
            "Submitted purchase events by outcome",
            ["result"],
            registry=self.registry,
        )

        self.swept = Counter(
            "radar_sweep_customers_total",
            "Customers re-evaluated by the sweeper because their next check had come",
            registry=self.registry,
        )
        self.sweep_duration = Histogram(
            "radar_sweep_duration_seconds",
            "Duration of a sweep (every due customer, in batches)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )

        self.scored_events = Counter(
            "radar_scorer_events_total",
            "Events folded into their customers' patterns and scored",
            registry=self.registry,
        )
        self.scorer_pending = Gauge(
            "radar_scorer_pending_events",
            "Events committed but not yet folded by a scorer (this process's latest count)",
            registry=self.registry,
        )
        self.scorer_lag = Histogram(
            "radar_scorer_lag_seconds",
            "Time from an event's commit to its scoring (and its alerts' publication)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.scorer_batch_seconds = Histogram(
            "radar_scorer_batch_duration_seconds",
            "Duration of one scorer micro-batch transaction",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

        self.model_degraded = Gauge(
            "radar_model_degraded",
            "1 when the defection score did worse than its bounds on the latest matured week",
            registry=self.registry,
        )

        self.webhook_attempts = Counter(
            "radar_webhook_attempts_total",
            "Webhook delivery attempts by result (succeeded, failed, error)",
            ["result"],
            registry=self.registry,
        )
        self.set_aside = Counter(
            "radar_set_aside_total",
            "Items a background loop could not process and set aside so the others go on",
            ["loop"],
            registry=self.registry,
        )
        self.webhook_latency = Histogram(
            "radar_webhook_attempt_duration_seconds",
            "Time a receiver took to answer a webhook",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
            registry=self.registry,
        )

    def count_events(self, accepted: int, duplicates: int, rejected: int) -> None:
        for result, count in (
            ("accepted", accepted),
            ("duplicate", duplicates),
            ("rejected", rejected),
        ):
            if count:
                self.events.labels(result).inc(count)


class MetricsMiddleware:
    """Counts and times every request, labelled by route template (not raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            # (path_format: the template without converters, /x/{id} for /x/{id:path})
            template = getattr(route, "path_format", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
