"""/v1/alerts: poll and page alerts, follow the change feed, and work an alert."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from sqlalchemy import Connection

from app.alerts import queries, workflow
from app.alerts.queries import AlertFilter, ArmFilter, FeedEvent, Sort
from app.alerts.repository import AlertRow
from app.alerts.repository import get as get_alert
from app.alerts.schemas import (
    AcknowledgeIn,
    AlertChanges,
    AlertDetail,
    AlertEventOut,
    AlertOut,
    AlertPage,
    AssignIn,
    CaseOut,
    CasePage,
    CustomerSummary,
    NoteIn,
    ResolveIn,
    SnoozeIn,
    Status,
)
from app.customers.repository import get_state
from app.kit.auth import BearerCredentials, Principal, ReadKey, Scope, require_scope
from app.kit.db import Money, TransactionRunner
from app.kit.errors import Gone, NotFound, problem_responses
from app.kit.params import FREE_TEXT_PATTERN, MAX_ROW_ID, Identifier, IsoAwareDatetime, RowId
from app.kit.settings import Settings
from app.policy.schemas import Rule, Severity

router = APIRouter(prefix="/v1/alerts", tags=["alerts"], responses=problem_responses())

# A non-negative amount the database's money columns can hold (4 decimals). Written as a
# pattern rather than a Decimal's bounds, so that the document says exactly what is taken.
MONEY_PATTERN = r"^\d{1,14}(\.\d{1,4})?$"

MinValueAtRisk = Annotated[
    str | None,
    Query(pattern=MONEY_PATTERN, description="An amount, e.g. 250 or 99.5", max_length=19),
]
StoreIds = Annotated[list[Identifier], Query(max_length=200)]
Arms = Annotated[
    ArmFilter,
    Query(
        description="The outreach experiment's arm: contact (the call list: cases to call, "
        "and cases opened without a holdout), control (held out: never to call), or all"
    ),
]

# The feed is re-read this often while a long poll waits (any replica may have written).
LONG_POLL_STEP = 0.25


async def _workflow_key(request: Request, credentials: BearerCredentials) -> Principal:
    """The scope that may work alerts is configurable (RADAR_ALERT_WORKFLOW_SCOPE)."""
    settings: Settings = request.app.state.settings
    return await require_scope(Scope(settings.alert_workflow_scope))(request, credentials)


WorkflowKey = Annotated[Principal, Depends(_workflow_key)]


@router.get(
    "",
    summary="Alerts, filtered and sorted, a page at a time",
    responses=problem_responses(400),  # a cursor this service did not issue
)
async def list_alerts(
    request: Request,
    _: ReadKey,
    status: Annotated[list[Status], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    rule: Annotated[list[Rule], Query()] = [],  # noqa: B006
    severity: Annotated[list[Severity], Query()] = [],  # noqa: B006
    store_id: StoreIds = [],  # noqa: B006
    customer_id: Annotated[Identifier | None, Query()] = None,
    assigned_to: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            pattern=FREE_TEXT_PATTERN,
            description="Assigned to this person",
        ),
    ] = None,
    min_value_at_risk: MinValueAtRisk = None,
    opened_after: Annotated[IsoAwareDatetime | None, Query()] = None,
    opened_before: Annotated[IsoAwareDatetime | None, Query()] = None,
    arm: Arms = "contact",
    sort: Sort = "-value_at_risk",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> AlertPage:
    filters = AlertFilter(
        status=list(status),
        rule=list(rule),
        severity=list(severity),
        store_id=store_id,
        customer_id=customer_id,
        assigned_to=assigned_to,
        min_value_at_risk=None if min_value_at_risk is None else Decimal(min_value_at_risk),
        opened_after=opened_after,
        opened_before=opened_before,
        arm=arm,
    )
    rows, next_cursor = await _transactions(request).read(
        lambda connection: queries.page(connection, filters, sort, limit, cursor)
    )
    return AlertPage(
        items=[_out(row) for row in rows], next_cursor=next_cursor, has_more=next_cursor is not None
    )


cases_router = APIRouter(prefix="/v1/cases", tags=["alerts"], responses=problem_responses())


@cases_router.get(
    "",
    summary="One case per customer to call: their unresolved alerts, the strongest first",
    responses=problem_responses(400),  # a cursor this service did not issue
)
async def list_cases(
    request: Request,
    _: ReadKey,
    store_id: StoreIds = [],  # noqa: B006
    min_value_at_risk: MinValueAtRisk = None,
    arm: Arms = "contact",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> CasePage:
    """The call list: each customer once, ordered by the value their strongest reason puts
    at stake. The alerts under a case are the ones `/v1/alerts` lists and the feed and
    webhooks announce; a case is closed when all of them are resolved."""
    minimum = None if min_value_at_risk is None else Decimal(min_value_at_risk)
    groups, next_cursor = await _transactions(request).read(
        lambda connection: queries.cases(connection, store_id, minimum, limit, cursor, arm)
    )
    items = []
    for alerts in groups:
        head = alerts[0]
        items.append(
            CaseOut(
                customer_id=head.customer_id,
                store_id=head.store_id,
                rule=head.rule,
                summary=head.evidence.get("summary"),
                severity=head.severity,
                value_at_risk=head.value_at_risk,
                opened_at=min(alert.opened_at for alert in alerts),
                alerts=[_out(alert) for alert in alerts],
            )
        )
    return CasePage(items=items, next_cursor=next_cursor, has_more=next_cursor is not None)


@router.get(
    "/changes",
    summary="Every alert change in commit order, after a cursor (long poll with wait)",
    responses={**problem_responses(410), 304: {"description": "Nothing new (If-None-Match)"}},
)
async def alert_changes(
    request: Request,
    response: Response,
    _: ReadKey,
    after: Annotated[
        int, Query(ge=0, le=MAX_ROW_ID, description="The last seq seen (0: from the start)")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    wait: Annotated[int, Query(ge=0, le=30, description="Seconds to wait for a change")] = 0,
    arm: Arms = "contact",
    if_none_match: Annotated[str | None, Header()] = None,
) -> Any:
    transactions = _transactions(request)

    def read(connection: Connection) -> tuple[int, list[FeedEvent]]:
        return queries.purged_through(connection), queries.changes(
            connection, after, limit + 1, arm
        )

    deadline = time.monotonic() + wait
    while True:
        purged, events = await transactions.read(read)
        if after < purged:
            raise Gone(
                f"Events up to seq {purged} are no longer kept (retention). Resynchronise: "
                "list the alerts (GET /v1/alerts), then follow the feed from the newest seq "
                f"you see in GET /v1/alerts/changes?after={purged}.",
                code="cursor_expired",
            )
        # On shutdown: answer now (nothing new), not at the end of the wait.
        if events or time.monotonic() >= deadline or request.app.state.shutting_down:
            break
        await asyncio.sleep(min(LONG_POLL_STEP, max(deadline - time.monotonic(), 0)))
    has_more = len(events) > limit
    events = events[:limit]
    next_cursor = events[-1].seq if events else after
    etag = f'"{after}-{next_cursor}"'
    if if_none_match == etag and not events:
        return Response(status_code=304, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return AlertChanges(
        events=[_event(e) for e in events], next_cursor=next_cursor, has_more=has_more
    )


@router.get(
    "/{alert_id}",
    summary="An alert, its customer and its history",
    responses=problem_responses(404),
)
async def get_alert_detail(request: Request, _: ReadKey, alert_id: RowId) -> AlertDetail:
    def load(connection: Connection) -> tuple[AlertRow | None, Any, list[FeedEvent]]:
        alert = get_alert(connection, alert_id)
        if alert is None:
            return None, None, []
        customer = get_state(connection, alert.customer_id)
        return alert, customer, queries.history(connection, alert_id)

    alert, customer, history = await _transactions(request).read(load)
    if alert is None:
        raise NotFound(f"There is no alert {alert_id}.")
    summary = None
    if customer is not None:
        summary = CustomerSummary(
            customer_id=customer.customer_id,
            first_visit_on=customer.first_visit_on,
            last_visit_on=customer.last_visit_on,
            visit_days=customer.visit_days,
            home_store=customer.home_store,
            segment=customer.segment,
            net_spend=Decimal(customer.purchase_amount - customer.refund_amount) / Money.SCALE,
        )
    return AlertDetail(alert=_out(alert), customer=summary, history=[_event(e) for e in history])


_ACTION_ERRORS = problem_responses(404, 409, 422)


@router.post("/{alert_id}/acknowledge", summary="Someone is on it", responses=_ACTION_ERRORS)
async def acknowledge(
    request: Request,
    key: WorkflowKey,
    alert_id: RowId,
    body: AcknowledgeIn | None = None,
) -> AlertOut:
    actor = (body.by if body else None) or key.name
    return await _apply(request, alert_id, workflow.Change("acknowledge", actor))


@router.post(
    "/{alert_id}/assign", summary="Give the alert to someone to call", responses=_ACTION_ERRORS
)
async def assign(request: Request, key: WorkflowKey, alert_id: RowId, body: AssignIn) -> AlertOut:
    return await _apply(
        request, alert_id, workflow.Change("assign", body.by or key.name, to=body.to)
    )


@router.post(
    "/{alert_id}/notes",
    summary="Add a note (the latest is the alert's `note`; each is in its history)",
    responses=_ACTION_ERRORS,
)
async def add_note(request: Request, key: WorkflowKey, alert_id: RowId, body: NoteIn) -> AlertOut:
    return await _apply(
        request, alert_id, workflow.Change("note", body.by or key.name, note=body.text)
    )


@router.post(
    "/{alert_id}/snooze", summary="Hide the alert until a moment", responses=_ACTION_ERRORS
)
async def snooze(request: Request, key: WorkflowKey, alert_id: RowId, body: SnoozeIn) -> AlertOut:
    return await _apply(
        request, alert_id, workflow.Change("snooze", body.by or key.name, until=body.until)
    )


@router.post(
    "/{alert_id}/resolve",
    summary="Close the alert with the outcome and the customer's reason",
    responses=_ACTION_ERRORS,
)
async def resolve(request: Request, key: WorkflowKey, alert_id: RowId, body: ResolveIn) -> AlertOut:
    change = workflow.Change(
        "resolve",
        body.by or key.name,
        outcome=body.outcome,
        reason=body.reason,
        note=body.note,
        channel=body.channel,
    )
    return await _apply(request, alert_id, change)


async def _apply(request: Request, alert_id: int, change: workflow.Change) -> AlertOut:
    settings: Settings = request.app.state.settings
    now = request.app.state.clock()
    alert = await _transactions(request).run(
        lambda connection: workflow.apply(
            connection, alert_id, change, now, settings.alert_reasons, settings.alert_escalate_after
        )
    )
    return _out(alert)


def _transactions(request: Request) -> TransactionRunner:
    transactions: TransactionRunner = request.app.state.transactions
    return transactions


def _out(alert: AlertRow) -> AlertOut:
    return AlertOut.model_validate(alert.snapshot())


def _event(event: FeedEvent) -> AlertEventOut:
    return AlertEventOut(
        seq=event.seq,
        type=event.type,
        alert_id=event.alert_id,
        customer_id=event.customer_id,
        occurred_at=event.occurred_at,
        actor=event.actor,
        alert=None if event.alert_id is None else AlertOut.model_validate(event.data),
        model_quality=event.data if event.alert_id is None else None,
    )
