"""Liveness, readiness and metrics: no API key, cheap enough to poll every few seconds."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from app.kit.backlog import Backlog
from app.kit.errors import PROBLEM_CONTENT_TYPE, Problem, ServiceUnavailable
from app.kit.metrics import Metrics
from app.kit.migrations import current_revision, head_revision

router = APIRouter(tags=["health"])
READINESS_TIMEOUT_SECONDS = 3.0


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    schema_revision: str | None
    pending_events: int = Field(description="Events stored and not yet scored (about)")


@router.get("/healthz", summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="The database is reachable, its schema current and the scorers keep up",
    responses={503: {"model": Problem, "content": {PROBLEM_CONTENT_TYPE: {}}}},
)
async def readyz(request: Request) -> Readiness:
    engine: AsyncEngine = request.app.state.engine
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            revision = await current_revision(engine)
    except Exception as exc:
        raise ServiceUnavailable(
            f"database unreachable ({type(exc).__name__})",
            code="database_unavailable",
            headers={"Retry-After": "5"},
        ) from exc
    if revision != head_revision():
        raise ServiceUnavailable(
            f"schema at {revision}, code expects {head_revision()}: run 'radar migrate'",
            code="migrations_pending",
        )
    backlog: Backlog = request.app.state.backlog
    if backlog.over():
        raise ServiceUnavailable(
            f"{backlog.pending} events wait to be scored, more than {backlog.bound}: ingest "
            "refuses new events until the scorers catch up",
            code="scorer_backlog",
            headers={"Retry-After": "2"},
        )
    return Readiness(
        status="ok",
        database=engine.dialect.name,
        schema_revision=revision,
        pending_events=backlog.pending,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
