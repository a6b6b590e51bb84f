"""GET /v1/set-aside: what the background loops could not process; retry one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from sqlalchemy import Connection

from app import pipeline
from app.alerts import service as alerts
from app.kit.auth import ManageKey
from app.kit.db import TransactionRunner
from app.kit.errors import NotFound, problem_responses
from app.kit.params import PageBefore, RowId
from app.setaside import repository
from app.setaside.schemas import Loop, SetAsideOut, SetAsidePage

router = APIRouter(prefix="/v1/set-aside", tags=["set aside"], responses=problem_responses())


def _transactions(request: Request) -> TransactionRunner:
    transactions: TransactionRunner = request.app.state.transactions
    return transactions


@router.get("", summary="Items the background loops set aside, newest first")
async def list_set_aside(
    request: Request,
    _: ManageKey,
    loop: Loop | None = None,
    before: PageBefore = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SetAsidePage:
    def read(connection: Connection) -> SetAsidePage:
        rows = repository.page(connection, loop, before, limit + 1)
        items = [SetAsideOut.model_validate(row, from_attributes=True) for row in rows[:limit]]
        return SetAsidePage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    return await _transactions(request).read(read)


@router.post(
    "/{item_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Give the item back to its loop now (set aside again if it fails again)",
    responses=problem_responses(404),
)
async def retry_set_aside(request: Request, _: ManageKey, item_id: RowId) -> SetAsideOut:
    now = request.app.state.clock()

    def retry(connection: Connection) -> SetAsideOut:
        row = repository.take(connection, item_id)
        if row is None:
            raise NotFound(f"No set-aside item {item_id}.")
        if row.loop == Loop.SWEEPER:
            alerts.sweep_again(connection, row.item, now)
        elif row.loop == Loop.SCORER:
            pipeline.score_again(connection, row.item)
        return SetAsideOut.model_validate(row, from_attributes=True)

    answer = await _transactions(request).run(retry)
    if answer.loop == Loop.SCORER:
        request.app.state.scorer.wake()
    return answer
