"""/v1/reports/outreach-effect: does calling customers bring them back? (JSON or CSV)"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from app.kit.auth import ReadKey
from app.kit.errors import problem_responses
from app.outreach import service, stats
from app.outreach.service import Effect, EffectRow, FollowedCase
from app.policy import service as policies
from app.reports.endpoints import CSV, From, To, answer, read, span

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=problem_responses(422))

METHOD = (
    "Cases opened in the span, each in the arm drawn when it opened (intention to treat), "
    "counted once their window has passed. Return rate: a purchase within the window; its "
    "difference (contact - control) with Newcombe's hybrid score interval (Wilson intervals "
    "of each rate combined). Net spend in the window: difference of means with Welch's t "
    "interval. Cases needed: normal approximation for two proportions, two-sided, 80 % power, "
    "at the current holdout, over the control group's return rate."
)


class OutreachEffectReport(BaseModel):
    start: date
    end: date
    method: str = Field(description="How the numbers are worked out")
    confidence: float = Field(description="Of every interval")
    holdout: float = Field(description="The current policy's share of cases held out")
    window_days: int
    minimum_effect: float
    cases_needed: int | None = Field(
        description="Followed cases (both groups) needed to see `minimum_effect`"
    )
    cases_so_far: int
    holdout_changed: bool = Field(
        description="The span's cases opened under different holdouts: compare by month"
    )
    verdict: str = Field(description="What the numbers say, in one sentence")
    rows: list[EffectRow]


@router.get(
    "/outreach-effect",
    summary="Return rate and value recovered, called customers against the control group",
    responses=CSV,
)
async def outreach_effect(request: Request, _: ReadKey, start: From = None, end: To = None) -> Any:
    """By rule, severity, home store and month the case opened, and for all cases."""
    first, last = span(request, start, end, timedelta(days=365))
    now = request.app.state.clock()

    def build(connection: Connection) -> Effect:
        policy = policies.current(connection).body
        window = timedelta(days=policy.outreach.window_days)
        found = service.cases(connection, first, last, window, now)
        return service.effect(connection, policy, found)

    effect = await read(request, build)
    return answer(
        request,
        effect.rows,
        EffectRow,
        lambda: OutreachEffectReport(
            start=first,
            end=last,
            method=METHOD,
            confidence=stats.CONFIDENCE,
            holdout=effect.holdout,
            window_days=effect.window_days,
            minimum_effect=effect.minimum_effect,
            cases_needed=effect.cases_needed,
            cases_so_far=effect.cases_so_far,
            holdout_changed=effect.holdout_changed,
            verdict=effect.verdict,
            rows=effect.rows,
        ),
    )


class OutreachCasesReport(BaseModel):
    start: date
    end: date
    window_days: int
    rows: list[FollowedCase]


@router.get(
    "/outreach-cases",
    summary="Each case of the experiment and what followed: back (when), spend, or away",
    responses=CSV,
)
async def outreach_cases(request: Request, _: ReadKey, start: From = None, end: To = None) -> Any:
    """The rows the effect is computed from, one per case opened in the span (at most three
    years), oldest first: recorded from the purchases, nobody types them."""
    first, last = span(request, start, end, timedelta(days=90))
    now = request.app.state.clock()

    def build(connection: Connection) -> tuple[int, list[FollowedCase]]:
        policy = policies.current(connection).body
        window = timedelta(days=policy.outreach.window_days)
        found = service.cases(connection, first, last, window, now)
        return policy.outreach.window_days, [service.followed(case, window) for case in found]

    window_days, rows = await read(request, build)
    return answer(
        request,
        rows,
        FollowedCase,
        lambda: OutreachCasesReport(start=first, end=last, window_days=window_days, rows=rows),
    )
