"""/v1/reports/model-quality and /v1/reports/defector-profiles (JSON, or CSV)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import Connection

from app.kit.auth import ReadKey
from app.kit.errors import problem_responses
from app.policy import service as policies
from app.quality import profiles, service
from app.quality.profiles import ProfileRow
from app.quality.schemas import DefectorProfilesReport, ModelQualityReport
from app.quality.service import WeekRow
from app.reports.endpoints import CSV, From, To, answer, checked_span, read, span

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=problem_responses(422))
# Every week of the span scores every customer loyal then: on 20,000 customers over two
# years, 26 weeks take about 2 s here and 104 weeks 5 s, so a request covers a year at most.
MAX_MODEL_QUALITY_SPAN = timedelta(weeks=53)


@router.get(
    "/model-quality",
    summary="The defection score and the rules against what customers did next",
    responses=CSV,
)
async def model_quality(request: Request, _: ReadKey, start: From = None, end: To = None) -> Any:
    """Weekly: the score's calibration, Brier score and AUC against recency's, on the
    customers loyal each Monday whose horizon has passed; the rules' precision. Default:
    the last 26 such weeks. CSV: the weekly rows."""
    now = request.app.state.clock()
    horizon = await read(request, lambda c: policies.current(c).body.horizon_days)
    first, last = _model_span(start, end, *service.default_span(horizon, now.date()))
    result = await read(request, lambda c: service.report(c, first, last, now))
    return answer(
        request,
        result.weeks,
        WeekRow,
        lambda: ModelQualityReport(
            start=first,
            end=last,
            horizon_days=result.horizon_days,
            weeks=result.weeks,
            calibration=result.calibration,
            overall=result.pooled,
            rules_by_week=result.rules_by_week,
            rules=result.rules,
            degradation=result.degradation,
        ),
    )


def _model_span(
    start: date | None, end: date | None, default_start: date, default_end: date
) -> tuple[date, date]:
    last = end or default_end
    first = start or (last - (default_end - default_start))
    return checked_span(first, last, MAX_MODEL_QUALITY_SPAN, "53 weeks")


@router.get(
    "/defector-profiles",
    summary="How the customers lost in a span differ from those retained",
    responses=CSV,
)
async def defector_profiles(
    request: Request, _: ReadKey, start: From = None, end: To = None
) -> Any:
    """Lost and retained customers by home store, segment, first-visit spend (quartile
    bands), tenure and the categories they bought; default span: the last 90 days."""
    first, last = span(request, start, end, timedelta(days=90))

    def build(connection: Connection) -> tuple[int, int, list[ProfileRow]]:
        policy = policies.current(connection).body
        lost, retained = profiles.groups(connection, policy, first, last)
        return len(lost), len(retained), profiles.rows(connection, lost, retained, first)

    lost, retained, rows = await read(request, build)
    return answer(
        request,
        rows,
        ProfileRow,
        lambda: DefectorProfilesReport(
            start=first, end=last, lost=lost, retained=retained, rows=rows
        ),
    )
