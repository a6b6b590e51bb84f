"""/v1/reports: defection rate, reasons, response times and value at risk (JSON or CSV)."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import Connection

from app.kit.auth import ReadKey
from app.kit.db import TransactionRunner
from app.kit.errors import FieldError, ValidationFailed, problem_responses
from app.kit.negotiation import prefers_csv
from app.kit.params import Identifier, IsoDate
from app.kit.text import spreadsheet_text
from app.policy import service as policies
from app.reports import service
from app.reports.service import Period, RateRow, ReasonRow, ResponseRow, Split, ValueRow

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=problem_responses(422))
CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with Accept: text/csv"}
}
MAX_SPAN = timedelta(days=3 * 366)
T = TypeVar("T")

From = Annotated[IsoDate | None, Query(alias="from", description="First day (default: see each)")]
To = Annotated[
    IsoDate | None, Query(alias="to", description="Day after the last (default: tomorrow)")
]


class DefectionRateReport(BaseModel):
    period: Period
    start: date
    end: date
    rows: list[RateRow]


class ReasonsReport(BaseModel):
    start: date
    end: date
    rows: list[ReasonRow]


class ResponseTimesReport(BaseModel):
    start: date
    end: date
    rows: list[ResponseRow]


class ValueAtRiskReport(BaseModel):
    rows: list[ValueRow]


@router.get(
    "/defection-rate", summary="Loyal customers, defections and win-backs per period", responses=CSV
)
async def defection_rate(
    request: Request,
    _: ReadKey,
    start: From = None,
    end: To = None,
    period: Period = "month",
    by: Annotated[
        Split | None,
        Query(description="Split by the customers' home store or the staff who served them most"),
    ] = None,
) -> Any:
    first, last = span(
        request, start, end, timedelta(weeks=12) if period == "week" else timedelta(days=365)
    )

    def build(connection: Connection) -> list[RateRow]:
        policy = policies.current(connection).body
        return service.defection_rate(connection, policy, period, first, last, by)

    rows = await read(request, build)
    return answer(
        request,
        rows,
        RateRow,
        lambda: DefectionRateReport(period=period, start=first, end=last, rows=rows),
    )


@router.get(
    "/reasons",
    summary="Why customers left: counts and value lost by reason and store",
    responses=CSV,
)
async def reasons(
    request: Request,
    _: ReadKey,
    start: From = None,
    end: To = None,
    store_id: Annotated[Identifier | None, Query()] = None,
) -> Any:
    first, last = span(request, start, end, timedelta(days=90))
    rows = await read(request, lambda c: service.reasons(c, first, last, store_id))
    return answer(request, rows, ReasonRow, lambda: ReasonsReport(start=first, end=last, rows=rows))


@router.get(
    "/response-times",
    summary="Hours from alert to acknowledgement and resolution, per store",
    responses=CSV,
)
async def response_times(request: Request, _: ReadKey, start: From = None, end: To = None) -> Any:
    first, last = span(request, start, end, timedelta(days=90))
    rows = await read(request, lambda c: service.response_times(c, first, last))
    return answer(
        request, rows, ResponseRow, lambda: ResponseTimesReport(start=first, end=last, rows=rows)
    )


@router.get(
    "/value-at-risk", summary="Open alerts' value at risk by store and severity", responses=CSV
)
async def value_at_risk(request: Request, _: ReadKey) -> Any:
    rows = await read(request, service.value_at_risk)
    return answer(request, rows, ValueRow, lambda: ValueAtRiskReport(rows=rows))


def span(
    request: Request, start: date | None, end: date | None, default: timedelta
) -> tuple[date, date]:
    """The report's [from, to): `to` defaults to tomorrow, `from` to `default` before it."""
    last = end or request.app.state.clock().date() + timedelta(days=1)
    return checked_span(start or last - default, last)


def checked_span(
    first: date, last: date, longest: timedelta = MAX_SPAN, words: str = "three years"
) -> tuple[date, date]:
    """[first, last), refused naming `from` when it is empty or longer than `longest`."""
    if first >= last:
        raise ValidationFailed(
            "'from' must be before 'to'.",
            errors=[
                FieldError(pointer="/query/from", code="empty_span", message="must be before 'to'")
            ],
        )
    if last - first > longest:
        raise ValidationFailed(
            f"A report covers at most {words}.",
            errors=[
                FieldError(
                    pointer="/query/from",
                    code="span_too_long",
                    message=f"at most {words} before 'to'",
                )
            ],
        )
    return first, last


async def read(request: Request, build: Callable[[Connection], T]) -> T:
    transactions: TransactionRunner = request.app.state.transactions
    return await transactions.read(build)


def answer(
    request: Request, rows: Sequence[Any], row_type: type, report: Callable[[], BaseModel]
) -> Any:
    if not prefers_csv(request.headers.get("accept")):
        return report()
    return Response(to_csv(rows, row_type), media_type="text/csv; charset=utf-8")


def to_csv(rows: Sequence[Any], row_type: type) -> str:
    """A report's rows as CSV, a header of the row's field names first (the page's exports
    are the same bytes as the API's)."""
    buffer = io.StringIO()
    names = [field.name for field in dataclasses.fields(row_type)]
    # Lines end with CRLF (RFC 4180): the writer then also quotes a cell holding a bare CR,
    # which a spreadsheet would otherwise take for the start of a new row.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_cell(value) for value in dataclasses.astuple(row)])
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    """Text in a report came from clients (store and staff ids) or configuration (reasons);
    the numbers the service computes are not text and stay numbers (a net of -1 is -1)."""
    if value is None:
        return ""
    return spreadsheet_text(value) if isinstance(value, str) else value
