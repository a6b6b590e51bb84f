"""Every plan query; runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Table, func, insert, select, tuple_, update

from app.models import CustomerVisitDay, Plan

_plans = cast(Table, Plan.__table__)
_visits = cast(Table, CustomerVisitDay.__table__)


@dataclass(frozen=True, slots=True)
class PlanRow:
    id: int
    customer_id: str
    reason: str
    action: str
    owner: str
    store_id: str | None
    alert_id: int
    opened_by: str
    opened_at: datetime
    follow_up_on: date
    status: str
    closed_at: datetime | None
    closed_by: str | None
    note: str | None
    policy_version: int
    customer_returned_on: date | None


# The customer's first visit day after the day the plan opened: one probe of the visit
# days' primary key (customer_id, day) per plan.
_RETURNED_ON = (
    select(func.min(_visits.c.day))
    .where(_visits.c.customer_id == _plans.c.customer_id, _visits.c.day > _plans.c.opened_on)
    .scalar_subquery()
)
COLUMNS = [_plans.c[name] for name in PlanRow.__slots__ if name != "customer_returned_on"]


def _row(values: Any) -> PlanRow:
    fields = dict(zip(PlanRow.__slots__, values, strict=True))
    returned = fields["customer_returned_on"]
    if isinstance(returned, str):  # (should a driver hand the subquery's day back as text)
        fields["customer_returned_on"] = date.fromisoformat(returned)
    return PlanRow(**fields)


def _select() -> Any:
    return select(*COLUMNS, _RETURNED_ON.label("customer_returned_on"))


@dataclass(slots=True)
class PlanFilter:
    status: list[str] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)
    owner: list[str] = field(default_factory=list)
    store_id: list[str] = field(default_factory=list)
    customer_id: str | None = None
    due_before: date | None = None


def open_for(connection: Connection, customer_id: str, reason: str) -> int | None:
    """The customer's open plan for the reason, if any (at most one: a unique index)."""
    query = select(_plans.c.id).where(
        _plans.c.customer_id == customer_id, _plans.c.reason == reason, _plans.c.status == "open"
    )
    found: int | None = connection.execute(query).scalar_one_or_none()
    return found


def add(connection: Connection, values: dict[str, Any]) -> int:
    plan_id: int = connection.execute(
        insert(_plans).values(status="open", **values).returning(_plans.c.id)
    ).scalar_one()
    return plan_id


def get(connection: Connection, plan_id: int) -> PlanRow | None:
    found = connection.execute(_select().where(_plans.c.id == plan_id)).first()
    return None if found is None else _row(found)


def page(
    connection: Connection, filters: PlanFilter, limit: int, after: tuple[date, int] | None
) -> list[PlanRow]:
    """Up to `limit` plans, the soonest follow-up first (ties by id), after a page's last."""
    query = _select().where(*_conditions(filters))
    if after is not None:
        query = query.where(tuple_(_plans.c.follow_up_on, _plans.c.id) > after)
    query = query.order_by(_plans.c.follow_up_on, _plans.c.id).limit(limit)
    return [_row(values) for values in connection.execute(query)]


def _conditions(filters: PlanFilter) -> list[ColumnElement[bool]]:
    c = _plans.c
    conditions: list[ColumnElement[bool]] = []
    for name, values in (
        ("status", filters.status),
        ("reason", filters.reason),
        ("owner", filters.owner),
        ("store_id", filters.store_id),
    ):
        if values:
            conditions.append(c[name].in_(values))
    if filters.customer_id is not None:
        conditions.append(c.customer_id == filters.customer_id)
    if filters.due_before is not None:
        conditions.append(c.follow_up_on < filters.due_before)
    return conditions


def close(
    connection: Connection,
    plan_id: int,
    status: str,
    at: datetime,
    by: str,
    note: str | None,
) -> bool:
    """Close an open plan; False when there is no open plan of that id (one statement, so
    two people closing it at once cannot both succeed)."""
    result = connection.execute(
        update(_plans)
        .where(_plans.c.id == plan_id, _plans.c.status == "open")
        .values(status=status, closed_at=at, closed_by=by, note=note)
    )
    return bool(result.rowcount)


def opened_by(connection: Connection, alert_ids: Sequence[int]) -> dict[int, PlanRow]:
    """The plans the given alerts opened, by the alert's id."""
    found: dict[int, PlanRow] = {}
    ids = sorted(set(alert_ids))
    for start in range(0, len(ids), 900):  # below SQLite's bound-parameter limit
        query = _select().where(_plans.c.alert_id.in_(ids[start : start + 900]))
        found.update((plan.alert_id, plan) for plan in map(_row, connection.execute(query)))
    return found
