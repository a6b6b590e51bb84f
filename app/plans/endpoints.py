"""/v1/plans: what is being done about the reasons customers gave; mark a plan done or
cancelled."""

from __future__ import annotations

import base64
import binascii
from datetime import date
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request
from sqlalchemy import Connection

from app.alerts.endpoints import StoreIds, WorkflowKey
from app.kit.auth import ReadKey
from app.kit.db import TransactionRunner
from app.kit.errors import BadRequest, FieldError, problem_responses
from app.kit.params import (
    EARLIEST_DATE,
    FREE_TEXT_PATTERN,
    LATEST_DATE,
    MAX_ROW_ID,
    Identifier,
    IsoDate,
    RowId,
)
from app.plans import repository, service
from app.plans.repository import PlanFilter, PlanRow
from app.plans.schemas import CloseIn, PlanOut, PlanPage, PlanStatus
from app.policy.playbooks import Owner

router = APIRouter(prefix="/v1/plans", tags=["plans"], responses=problem_responses())

Reasons = Annotated[
    list[Annotated[str, Query(min_length=1, max_length=64, pattern=FREE_TEXT_PATTERN)]],
    Query(max_length=100),
]


@router.get(
    "",
    summary="Plans, the soonest follow-up first, a page at a time",
    responses=problem_responses(400, 422),  # 400: a cursor this service did not issue
)
async def list_plans(
    request: Request,
    _: ReadKey,
    status: Annotated[list[PlanStatus], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    reason: Reasons = [],  # noqa: B006
    owner: Annotated[list[Owner], Query()] = [],  # noqa: B006
    store_id: StoreIds = [],  # noqa: B006
    customer_id: Annotated[Identifier | None, Query()] = None,
    due_before: Annotated[
        IsoDate | None, Query(description="Follow-up before this day (open ones: overdue then)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> PlanPage:
    filters = PlanFilter(
        status=list(status),
        reason=list(reason),
        owner=list(owner),
        store_id=store_id,
        customer_id=customer_id,
        due_before=due_before,
    )
    after = None if cursor is None else _decode(cursor)
    rows = await _transactions(request).read(
        lambda connection: repository.page(connection, filters, limit + 1, after)
    )
    next_cursor = _encode(rows[limit - 1]) if len(rows) > limit else None
    return PlanPage(
        items=[_out(row) for row in rows[:limit]],
        next_cursor=next_cursor,
        has_more=next_cursor is not None,
    )


@router.get("/{plan_id}", summary="A plan", responses=problem_responses(404))
async def get_plan(request: Request, _: ReadKey, plan_id: RowId) -> PlanOut:
    return _out(await _transactions(request).read(lambda c: service.get(c, plan_id)))


_ACTION_ERRORS = problem_responses(404, 409, 422)


@router.post("/{plan_id}/done", summary="The plan was carried out", responses=_ACTION_ERRORS)
async def done(
    request: Request, key: WorkflowKey, plan_id: RowId, body: CloseIn | None = None
) -> PlanOut:
    return await _close(request, plan_id, "done", body, key.name)


@router.post("/{plan_id}/cancel", summary="The plan is dropped", responses=_ACTION_ERRORS)
async def cancel(
    request: Request, key: WorkflowKey, plan_id: RowId, body: CloseIn | None = None
) -> PlanOut:
    return await _close(request, plan_id, "cancelled", body, key.name)


async def _close(
    request: Request,
    plan_id: int,
    status: Literal["done", "cancelled"],
    body: CloseIn | None,
    key_name: str,
) -> PlanOut:
    now = request.app.state.clock()
    actor = (body.by if body else None) or key_name
    note = body.note if body else None

    def close(connection: Connection) -> PlanRow:
        return service.close(connection, plan_id, status, actor, note, now)

    return _out(await _transactions(request).run(close))


def _transactions(request: Request) -> TransactionRunner:
    transactions: TransactionRunner = request.app.state.transactions
    return transactions


def _out(plan: PlanRow) -> PlanOut:
    return PlanOut.model_validate(plan, from_attributes=True)


def _encode(last: PlanRow) -> str:
    raw = orjson.dumps({"s": "plan", "d": last.follow_up_on.isoformat(), "i": last.id})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[date, int]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if data["s"] != "plan":
            raise ValueError(data["s"])
        day, last_id = date.fromisoformat(data["d"]), int(data["i"])
        if not (EARLIEST_DATE <= day < LATEST_DATE and 0 < last_id <= MAX_ROW_ID):
            raise ValueError(day, last_id)
        return day, last_id
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise BadRequest(
            "Invalid cursor: not a cursor this service issued.",
            code="invalid_cursor",
            errors=[
                FieldError(
                    pointer="/query/cursor",
                    code="invalid_cursor",
                    message="not a cursor this service issued",
                )
            ],
        ) from exc
