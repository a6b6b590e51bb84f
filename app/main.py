"""The ASGI application: `create_app()` wires settings, database, auth and the routers."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from types import FrameType

from fastapi import Depends, FastAPI

from app import pipeline
from app.alerts import service as alerts
from app.alerts.endpoints import cases_router
from app.alerts.endpoints import router as alerts_router
from app.alerts.service import Evaluator
from app.customers.endpoints import router as customers_router
from app.health.endpoints import router as health_router
from app.ingestion import idempotency
from app.ingestion.asgi import IngestRoutes
from app.ingestion.endpoints import router as ingestion_router
from app.ingestion.writer import EventWriter
from app.keys.endpoints import router as keys_router
from app.kit.auth import Authenticator
from app.kit.backlog import Backlog
from app.kit.db import TransactionRunner, create_engine, create_sessionmaker, utcnow
from app.kit.errors import install_error_handlers
from app.kit.logging import configure_logging, silence_parameter_logs
from app.kit.metrics import Metrics, MetricsMiddleware
from app.kit.middleware import BodySizeLimitMiddleware, RequestIdMiddleware
from app.kit.migrations import upgrade
from app.kit.params import reject_unknown_query_parameters
from app.kit.periodic import PeriodicJobs
from app.kit.ratelimit import RateLimiter
from app.kit.settings import Settings, get_settings
from app.openapi import build_openapi
from app.outreach.endpoints import router as outreach_router
from app.pipeline import Scorer
from app.plans.endpoints import router as plans_router
from app.policy import service as policies
from app.policy.endpoints import router as policy_router
from app.quality import service as quality
from app.quality.endpoints import router as quality_router
from app.reports.endpoints import router as reports_router
from app.scoring import service as scoring
from app.setaside.endpoints import router as set_aside_router
from app.ui.endpoints import SignInNeeded, sign_in_redirect, static_assets
from app.ui.endpoints import router as ui_router
from app.webhooks import service as webhooks
from app.webhooks.dispatcher import Dispatcher
from app.webhooks.endpoints import router as webhooks_router
from app.webhooks.targets import Resolver, system_resolver

API_DESCRIPTION = """
Defection Radar tells a business, in real time, which of its customers are drifting away.

Every endpoint except `/healthz`, `/readyz`, `/metrics` and the docs needs
`Authorization: Bearer <key>`; keys carry the scopes `ingest`, `read` and `manage`.
Errors are `application/problem+json` (RFC 9457) with a stable `code`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    resolver: Resolver = system_resolver,
    watch_signals: bool = False,
) -> FastAPI:
    """The service. `clock` is the time alerts are evaluated at (tests and replays move it);
    `resolver` looks up webhook hosts; `watch_signals` (the server process) notices SIGTERM and
    SIGINT as soon as they arrive (`app.state.shutting_down`)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        if settings.migrate_on_start:
            await upgrade(engine)
        sessionmaker = create_sessionmaker(engine)
        app.state.engine = engine
        app.state.sessionmaker = sessionmaker
        app.state.authenticator = Authenticator(sessionmaker, settings)
        transactions = TransactionRunner(engine, settings)
        app.state.transactions = transactions
        if settings.policy_file is not None:
            path = settings.policy_file
            reasons = settings.alert_reasons
            await transactions.run(lambda c: policies.apply_file(c, path, utcnow(), reasons))
        evaluator = Evaluator(escalate_after=settings.alert_escalate_after)
        app.state.evaluator = evaluator
        metrics: Metrics = app.state.metrics
        backlog = Backlog(settings.scorer_max_backlog)
        app.state.backlog = backlog
        metrics.scorer_pending.set_function(lambda: backlog.pending)
        scorer = Scorer(
            transactions,
            evaluator,
            clock,
            backlog=backlog,
            metrics=metrics,
            batch_size=settings.scorer_batch_size,
            idle_poll=settings.scorer_idle_poll,
            linger=settings.scorer_linger,
            listen_url=None if settings.is_sqlite else settings.database_url,
        )
        app.state.scorer = scorer
        if settings.scorer:
            scorer.start()
        writer = EventWriter(
            transactions,
            max_future_skew=settings.max_future_skew,
            idempotency_ttl=settings.idempotency_key_ttl,
            # SQLite has one writer at a time; PostgreSQL takes several transactions at once.
            workers=1 if settings.is_sqlite else settings.writer_concurrency,
            metrics=metrics,
            backlog=backlog,
            on_appended=lambda _: scorer.wake(),
        )
        writer.start()
        app.state.event_writer = writer
        jobs = PeriodicJobs()
        # Each domain declares its own loops; an interval of 0 turns one off.
        jobs.start_all(
            [
                *pipeline.periodic_jobs(transactions, backlog),
                *idempotency.periodic_jobs(settings, transactions),
                *alerts.periodic_jobs(
                    settings, transactions, evaluator, clock, metrics, lambda: jobs.stopping
                ),
                *scoring.periodic_jobs(settings, transactions),
                *webhooks.periodic_jobs(settings, transactions),
                *quality.periodic_jobs(settings, transactions, metrics, clock),
            ]
        )
        dispatcher = Dispatcher(
            transactions, settings, metrics=app.state.metrics, resolver=resolver
        )
        app.state.dispatcher = dispatcher
        if settings.webhook_dispatcher:
            dispatcher.start()
        unwatch = _watch_shutdown_signals(app) if watch_signals else None
        try:
            yield
        finally:
            app.state.shutting_down = True
            if unwatch is not None:
                unwatch()
            grace = settings.shutdown_grace
            # Requests have finished by now (the server waited for them): the writer's queue
            # is empty or nearly, then the background loops stop side by side.
            await writer.stop(drain_seconds=grace.total_seconds())
            # The scorer folds what the last requests stored, within the grace period (what
            # it leaves stays queued for the next start or another replica).
            await asyncio.gather(scorer.stop(grace), jobs.stop(grace), dispatcher.stop(grace))
            await transactions.close()
            await engine.dispose()

    app = FastAPI(
        title="Defection Radar",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query_parameters)],
        # FastAPI's OpenTelemetry hooks: off (this service exports Prometheus metrics), so
        # that no request pays for looking up tracer and meter providers.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # /docs is served by the page's module from vendored assets (never from a CDN).
        docs_url=None,
        redoc_url=None,
    )
    silence_parameter_logs()
    app.state.settings = settings
    # Set once shutdown has begun: long polls then answer at once instead of holding it up.
    app.state.shutting_down = False
    app.state.clock = clock
    app.state.resolver = resolver
    app.state.metrics = Metrics()
    app.state.rate_limiter = RateLimiter(settings)
    install_error_handlers(app)
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    app.include_router(health_router)
    app.include_router(ingestion_router)
    app.include_router(keys_router)
    app.include_router(customers_router)
    app.include_router(policy_router)
    app.include_router(alerts_router)
    app.include_router(cases_router)
    app.include_router(reports_router)
    app.include_router(quality_router)
    app.include_router(plans_router)
    app.include_router(outreach_router)
    app.include_router(webhooks_router)
    app.include_router(set_aside_router)
    app.include_router(ui_router)
    app.add_exception_handler(SignInNeeded, sign_in_redirect)  # type: ignore[arg-type]
    app.mount("/ui/static", static_assets(), name="ui-static")
    # Added first = innermost: the ingest endpoints without the router, inside the rest.
    app.add_middleware(IngestRoutes, api=app)
    # Added last = outermost: request ids wrap everything, including 413s.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestIdMiddleware)
    return app


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory app.main:app_factory`."""
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return create_app(settings, watch_signals=True)


def _watch_shutdown_signals(app: FastAPI) -> Callable[[], None] | None:
    """On SIGTERM or SIGINT uvicorn stops accepting connections and waits for the requests in
    flight (up to its graceful timeout) before the lifespan's shutdown; a long poll would hold
    it for the rest of its wait. So chain onto uvicorn's handlers (installed by the time the
    lifespan starts): the app learns of the signal at once. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}

    def handle(number: int, frame: FrameType | None) -> None:
        app.state.shutting_down = True
        chained = previous[signal.Signals(number)]
        if callable(chained):
            chained(number, frame)

    for number, handler in previous.items():
        if callable(handler):  # the server's own: left alone when it has none
            signal.signal(number, handle)

    def unwatch() -> None:
        for number, handler in previous.items():
            if signal.getsignal(number) is handle:
                signal.signal(number, handler)

    return unwatch
