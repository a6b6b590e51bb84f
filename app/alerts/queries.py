"""Reading alerts: filtered pages with keyset cursors, the change feed, and its retention."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, cast

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    delete,
    func,
    or_,
    select,
    tuple_,
    update,
)

from app.alerts.repository import COLUMNS, AlertRow, to_alert
from app.kit.errors import BadRequest, FieldError
from app.kit.params import EARLIEST_TIME, LATEST_TIME, MAX_ROW_ID
from app.models import Alert, AlertEvent, AlertFeedState

_alerts = cast(Table, Alert.__table__)
_events = cast(Table, AlertEvent.__table__)
_feed_state = cast(Table, AlertFeedState.__table__)

_MAX_MONEY = Decimal(MAX_ROW_ID) / 10_000  # amounts are stored in 1/10,000
Sort = Literal["-value_at_risk", "value_at_risk", "-opened_at", "opened_at"]
# Which cases of the outreach experiment to list: the call list's by default (contact, and
# cases opened without a holdout); the control group only when asked for.
ArmFilter = Literal["contact", "control", "all"]


def arm_condition(column: ColumnElement[Any], arm: ArmFilter) -> ColumnElement[bool] | None:
    if arm == "contact":
        return or_(column.is_(None), column == "contact")
    if arm == "control":
        return column == "control"
    return None


@dataclass(slots=True)
class AlertFilter:
    status: list[str] = field(default_factory=list)
    rule: list[str] = field(default_factory=list)
    severity: list[str] = field(default_factory=list)
    store_id: list[str] = field(default_factory=list)
    customer_id: str | None = None
    assigned_to: str | None = None
    min_value_at_risk: Decimal | None = None
    opened_after: datetime | None = None
    opened_before: datetime | None = None
    arm: ArmFilter = "contact"


def page(
    connection: Connection, filters: AlertFilter, sort: Sort, limit: int, cursor: str | None
) -> tuple[list[AlertRow], str | None]:
    """One page in `sort` order (ties by id), and the cursor of the next one, if any."""
    column = _alerts.c[sort.lstrip("-")]
    descending = sort.startswith("-")
    query = select(*COLUMNS).where(*_conditions(filters))
    if cursor is not None:
        value, last_id = _decode(cursor, sort)
        key = tuple_(column, _alerts.c.id)
        query = query.where(key < (value, last_id) if descending else key > (value, last_id))
    order = (column.desc(), _alerts.c.id.desc()) if descending else (column, _alerts.c.id)
    rows = [to_alert(r) for r in connection.execute(query.order_by(*order).limit(limit + 1))]
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], _encode(sort, getattr(last, sort.lstrip("-")), last.id)


def _conditions(filters: AlertFilter) -> list[ColumnElement[bool]]:
    c = _alerts.c
    conditions: list[ColumnElement[bool]] = []
    for name, values in (
        ("status", filters.status),
        ("rule", filters.rule),
        ("severity", filters.severity),
        ("store_id", filters.store_id),
    ):
        if values:
            conditions.append(c[name].in_(values))
    if filters.customer_id is not None:
        conditions.append(c.customer_id == filters.customer_id)
    if filters.assigned_to is not None:
        conditions.append(c.assigned_to == filters.assigned_to)
    if filters.min_value_at_risk is not None:
        conditions.append(c.value_at_risk >= filters.min_value_at_risk)
    if filters.opened_after is not None:
        conditions.append(c.opened_at >= filters.opened_after)
    if filters.opened_before is not None:
        conditions.append(c.opened_at < filters.opened_before)
    arm = arm_condition(c.arm, filters.arm)
    if arm is not None:
        conditions.append(arm)
    return conditions


def _encode(sort: str, value: Any, last_id: int) -> str:
    raw = orjson.dumps(
        {"s": sort, "v": str(value) if isinstance(value, Decimal) else value, "i": last_id}
    )
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, sort: str) -> tuple[Any, int]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if data["s"] != sort:
            raise _bad_cursor("the cursor belongs to another sort order; start without one")
        last_id = int(data["i"])
        if not 0 < last_id <= MAX_ROW_ID:
            raise ValueError(last_id)
        if sort.endswith("value_at_risk"):
            value = Decimal(data["v"])
            if not value.is_finite() or abs(value) >= _MAX_MONEY:
                raise ValueError(value)
            return value, last_id
        opened_at = datetime.fromisoformat(data["v"])
        # An issued cursor holds a stored (UTC, in range) time; a forged one may not, and a
        # naive or far-off time would fail in the UTC conversion before the query (a 500).
        if not EARLIEST_TIME <= opened_at < LATEST_TIME:  # (TypeError when naive)
            raise ValueError(opened_at)
        return opened_at, last_id
    except (ValueError, KeyError, TypeError, InvalidOperation, binascii.Error) as exc:
        raise _bad_cursor("not a cursor this service issued") from exc


def _bad_cursor(message: str) -> BadRequest:
    return BadRequest(
        "Invalid cursor: " + message + ".",
        code="invalid_cursor",
        errors=[FieldError(pointer="/query/cursor", code="invalid_cursor", message=message)],
    )


def cases(
    connection: Connection,
    store_id: list[str],
    min_value_at_risk: Decimal | None,
    limit: int,
    cursor: str | None,
    arm: ArmFilter = "contact",
) -> tuple[list[list[AlertRow]], str | None]:
    """One page of customers with unresolved alerts, by their strongest reason's value at
    stake (highest first, ties by customer), each with their unresolved alerts, strongest
    first; and the cursor of the next page."""
    c = _alerts.c
    value = func.max(c.value_at_risk).label("value")
    conditions: list[ColumnElement[bool]] = [c.status != "resolved"]
    if store_id:
        conditions.append(c.store_id.in_(store_id))
    arm_only = arm_condition(c.arm, arm)
    if arm_only is not None:
        conditions.append(arm_only)
    grouped = select(c.customer_id, value).where(*conditions).group_by(c.customer_id)
    if min_value_at_risk is not None:
        grouped = grouped.having(value >= min_value_at_risk)
    if cursor is not None:
        last_value, last_customer = _decode_case(cursor)
        grouped = grouped.having(
            (value < last_value) | ((value == last_value) & (c.customer_id > last_customer))
        )
    found = connection.execute(grouped.order_by(value.desc(), c.customer_id).limit(limit + 1)).all()
    page_rows, more = found[:limit], len(found) > limit
    customers = [row.customer_id for row in page_rows]
    alerts: dict[str, list[AlertRow]] = {customer: [] for customer in customers}
    if customers:
        query = select(*COLUMNS).where(c.customer_id.in_(customers), *conditions)
        for row in connection.execute(query.order_by(c.value_at_risk.desc(), c.id)):
            alert = to_alert(row)
            alerts[alert.customer_id].append(alert)
    next_cursor = None
    if more:
        last = page_rows[-1]
        raw = orjson.dumps({"s": "case", "v": str(last.value), "c": last.customer_id})
        next_cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return [alerts[customer] for customer in customers], next_cursor


def _decode_case(cursor: str) -> tuple[Decimal, str]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if data["s"] != "case":
            raise ValueError(data["s"])
        value = Decimal(data["v"])
        customer = data["c"]
        if not value.is_finite() or abs(value) >= _MAX_MONEY or not isinstance(customer, str):
            raise ValueError(value)
        if not 0 < len(customer) <= 128 or "\x00" in customer:
            raise ValueError(customer)
        return value, customer
    except (ValueError, KeyError, TypeError, InvalidOperation, binascii.Error) as exc:
        raise _bad_cursor("not a cursor this service issued") from exc


@dataclass(frozen=True, slots=True)
class FeedEvent:
    seq: int
    type: str
    alert_id: int | None  # None (and no customer) for model.degraded
    customer_id: str | None
    occurred_at: datetime
    actor: str | None
    data: dict[str, Any]


_FEED_COLUMNS = [
    _events.c[name]
    for name in ("seq", "type", "alert_id", "customer_id", "occurred_at", "actor", "data")
]


def purged_through(connection: Connection) -> int:
    value = connection.execute(select(func.max(_feed_state.c.purged_through))).scalar_one()
    return int(value or 0)


def changes(
    connection: Connection, after: int, limit: int, arm: ArmFilter = "all"
) -> list[FeedEvent]:
    query = select(*_FEED_COLUMNS).where(_events.c.seq > after)
    arm_only = arm_condition(_events.c.arm, arm)
    if arm_only is not None:
        query = query.where(arm_only)
    query = query.order_by(_events.c.seq).limit(limit)
    return [FeedEvent(*row) for row in connection.execute(query)]


def history(connection: Connection, alert_id: int) -> list[FeedEvent]:
    query = select(*_FEED_COLUMNS).where(_events.c.alert_id == alert_id).order_by(_events.c.seq)
    return [FeedEvent(*row) for row in connection.execute(query)]


def purge_feed(connection: Connection, now: datetime, retention: timedelta) -> int:
    """Drop feed events older than the retention (the newest always stays, so the feed's
    position is never lost), and remember the newest dropped for cursor checks."""
    newest = connection.execute(select(func.max(_events.c.seq))).scalar_one()
    if newest is None:
        return 0
    doomed = (_events.c.occurred_at < now - retention) & (_events.c.seq < newest)
    through = connection.execute(select(func.max(_events.c.seq)).where(doomed)).scalar_one()
    if through is None:
        return 0
    deleted = connection.execute(delete(_events).where(doomed)).rowcount
    moved = connection.execute(
        update(_feed_state).values(purged_through=func.max(_feed_state.c.purged_through, through))
        if connection.dialect.name == "sqlite"
        else update(_feed_state).values(
            purged_through=func.greatest(_feed_state.c.purged_through, through)
        )
    ).rowcount
    if not moved:
        connection.execute(_feed_state.insert().values(id=1, purged_through=through))
    return int(deleted)


@dataclass(slots=True)
class CaseFilter:
    """Which unresolved alerts make the call list (the page's filters)."""

    status: list[str] = field(default_factory=lambda: ["open", "acknowledged"])
    rule: list[str] = field(default_factory=list)
    severity: list[str] = field(default_factory=list)
    store_id: list[str] = field(default_factory=list)
    assigned_to: str | None = None
    customer_prefix: str | None = None  # search by the start of a customer id
    arm: ArmFilter = "contact"  # the control group only when asked for


CaseSort = Literal["value", "oldest", "newest"]


def case_list(
    connection: Connection, filters: CaseFilter, sort: CaseSort, offset: int, limit: int
) -> tuple[int, list[list[AlertRow]]]:
    """The call list as numbered pages: how many customers match, and the page's customers
    (each with their matching alerts, strongest first). A person pages through hundreds,
    not millions, so an offset is fine here; the API's `/v1/cases` pages by cursor."""
    c = _alerts.c
    conditions: list[ColumnElement[bool]] = [c.status.in_(filters.status or ["none"])]
    for name, values in (
        ("rule", filters.rule),
        ("severity", filters.severity),
        ("store_id", filters.store_id),
    ):
        if values:
            conditions.append(c[name].in_(values))
    if filters.assigned_to is not None:  # as people type names: in any case
        conditions.append(func.lower(c.assigned_to) == filters.assigned_to.lower())
    arm = arm_condition(c.arm, filters.arm)
    if arm is not None:
        conditions.append(arm)
    if filters.customer_prefix:
        escaped = (
            filters.customer_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        )
        conditions.append(c.customer_id.like(escaped + "%", escape="\\"))
    value = func.max(c.value_at_risk).label("value")
    opened = func.min(c.opened_at).label("opened")
    grouped = select(c.customer_id, value, opened).where(*conditions).group_by(c.customer_id)
    total = connection.execute(select(func.count()).select_from(grouped.subquery())).scalar_one()
    order = {
        "value": (value.desc(), c.customer_id),
        "oldest": (opened, c.customer_id),
        "newest": (opened.desc(), c.customer_id),
    }[sort]
    found = connection.execute(grouped.order_by(*order).offset(offset).limit(limit)).all()
    customers = [row.customer_id for row in found]
    alerts: dict[str, list[AlertRow]] = {customer: [] for customer in customers}
    if customers:
        query = select(*COLUMNS).where(c.customer_id.in_(customers), *conditions)
        for row in connection.execute(query.order_by(c.value_at_risk.desc(), c.id)):
            alert = to_alert(row)
            alerts[alert.customer_id].append(alert)
    return total, [alerts[customer] for customer in customers]


def customer_history(connection: Connection, customer_id: str, limit: int = 200) -> list[FeedEvent]:
    """Every change of the customer's alerts, newest first: who did what, and the notes."""
    query = (
        select(*_FEED_COLUMNS)
        # Through the customer's alerts: both lookups are by index.
        .where(
            _events.c.alert_id.in_(select(_alerts.c.id).where(_alerts.c.customer_id == customer_id))
        )
        .order_by(_events.c.seq.desc())
        .limit(limit)
    )
    return [FeedEvent(*row) for row in connection.execute(query)]


def assignees(connection: Connection) -> list[str]:
    """Who unresolved alerts are assigned to (the page's filter)."""
    query = (
        select(_alerts.c.assigned_to)
        .where(_alerts.c.assigned_to.is_not(None), _alerts.c.resolved_at.is_(None))
        .distinct()
        .order_by(_alerts.c.assigned_to)
        .limit(500)
    )
    return [row[0] for row in connection.execute(query)]


def stores(connection: Connection) -> list[str]:
    """The stores that have unresolved alerts (the page's filter)."""
    query = (
        select(_alerts.c.store_id)
        .where(_alerts.c.store_id.is_not(None), _alerts.c.resolved_at.is_(None))
        .distinct()
        .order_by(_alerts.c.store_id)
        .limit(2000)
    )
    return [row[0] for row in connection.execute(query)]


def latest_seq(connection: Connection) -> int:
    """The newest change's seq (0 when there is none yet)."""
    return int(connection.execute(select(func.max(_events.c.seq))).scalar_one() or 0)


def unresolved_for(connection: Connection, customer_id: str) -> list[AlertRow]:
    """The customer's alerts not resolved yet, strongest first."""
    c = _alerts.c
    query = (
        select(*COLUMNS)
        .where(c.customer_id == customer_id, c.status != "resolved")
        .order_by(c.value_at_risk.desc(), c.id)
    )
    return [to_alert(row) for row in connection.execute(query)]


def has_alerts(connection: Connection, customer_id: str) -> bool:
    """Whether the customer ever had an alert."""
    query = select(_alerts.c.id).where(_alerts.c.customer_id == customer_id).limit(1)
    return connection.execute(query).first() is not None
