"""What the quality reports read (visit days, fits, alerts, purchases, patterns), and the
one thing they write: a degraded week's announcement, once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

import numpy as np
from sqlalchemy import Connection, Table, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.alerts.repository import hold_sequence_lock
from app.models import Alert, AlertEvent, Customer, ModelFit, ModelQualityAlarm, PurchaseEvent
from app.scoring.pareto import ParetoNbdParams

_alerts = cast(Table, Alert.__table__)
_events = cast(Table, PurchaseEvent.__table__)
_feed = cast(Table, AlertEvent.__table__)
_alarms = cast(Table, ModelQualityAlarm.__table__)
IntArray = np.ndarray[Any, np.dtype[np.int64]]

# One row per customer, their days as one string of fixed-width ISO dates that numpy parses
# in C: two million visit days arrive in a few tenths of a second, against seconds for a
# row (and a date object) per visit day.
_VISIT_DAYS = {
    "sqlite": "SELECT customer_id, count(*), group_concat(day, '') "
    "FROM customer_visit_days GROUP BY customer_id",
    "postgresql": "SELECT customer_id, count(*), "
    "string_agg(to_char(day, 'YYYY-MM-DD'), '' ORDER BY day) "
    "FROM customer_visit_days GROUP BY customer_id",
}
EPOCH = date(1970, 1, 1).toordinal()
CHUNK = 900  # ids per IN list: below SQLite's bound-parameter limit


@dataclass(frozen=True, slots=True)
class VisitDays:
    """Every customer's visit days, sorted: customer k's are days[starts[k]:starts[k + 1]]
    (days since 1970-01-01)."""

    customers: list[str]
    starts: IntArray  # one more than customers: the last is len(days)
    days: IntArray

    @property
    def counts(self) -> IntArray:
        return np.diff(self.starts)


def visit_days(connection: Connection) -> VisitDays:
    rows = connection.exec_driver_sql(_VISIT_DAYS[connection.dialect.name]).fetchall()
    text = "".join(row[2] for row in rows).encode()
    days = np.frombuffer(text, dtype="S10").astype("datetime64[D]").astype(np.int64)
    counts = np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows))
    owners = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    if days.size > 1 and np.any((np.diff(days) <= 0) & (np.diff(owners) == 0)):
        days = days[np.lexsort((days, owners))]  # (SQLite does not promise the order)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return VisitDays([row[0] for row in rows], starts, days)


@dataclass(frozen=True, slots=True)
class StoredFit:
    id: int
    fitted_at: datetime
    params: ParetoNbdParams


def model_fits(connection: Connection) -> list[StoredFit]:
    """Every stored Pareto/NBD fit, oldest first."""
    query = (
        select(
            ModelFit.id, ModelFit.fitted_at, ModelFit.r, ModelFit.alpha, ModelFit.s, ModelFit.beta
        )
        .where(ModelFit.model == "pareto_nbd", ModelFit.s.is_not(None), ModelFit.beta.is_not(None))
        .order_by(ModelFit.fitted_at, ModelFit.id)
    )
    return [
        StoredFit(row[0], row[1], ParetoNbdParams(row[2], row[3], row[4] or 0.0, row[5] or 0.0))
        for row in connection.execute(query)
    ]


@dataclass(frozen=True, slots=True)
class OpenedAlert:
    id: int
    customer_id: str
    rule: str
    opened_at: datetime
    evidence: dict[str, Any]


def alerts_opened(connection: Connection, start: datetime, end: datetime) -> list[OpenedAlert]:
    c = _alerts.c
    query = (
        select(c.id, c.customer_id, c.rule, c.opened_at, c.evidence)
        .where(c.opened_at >= start, c.opened_at < end)
        .order_by(c.opened_at, c.id)
    )
    return [OpenedAlert(*row) for row in connection.execute(query)]


@dataclass(frozen=True, slots=True)
class Purchase:
    customer_id: str
    refund: bool
    occurred_at: datetime
    occurred_on: date
    amount: float
    categories: frozenset[str]


def purchases(
    connection: Connection, customer_ids: Sequence[str], start: datetime, end: datetime
) -> list[Purchase]:
    """The customers' purchases and refunds that happened in [start, end)."""
    e = _events.c
    found: list[Purchase] = []
    ids = sorted(set(customer_ids))
    for first in range(0, len(ids), CHUNK):
        query = select(e.customer_id, e.kind, e.occurred_at, e.occurred_on, e.amount, e["items"])
        query = query.where(
            e.customer_id.in_(ids[first : first + CHUNK]),
            e.occurred_at >= start,
            e.occurred_at < end,
        )
        for customer, kind, at, day, amount, items in connection.execute(query):
            categories = frozenset(str(item.get("category")) for item in items or ())
            found.append(Purchase(customer, kind == "refund", at, day, float(amount), categories))
    return found


def lost_alerts(connection: Connection, start: datetime, end: datetime) -> set[str]:
    """Customers with an alert people resolved as lost in [start, end)."""
    c = _alerts.c
    query = select(c.customer_id).where(
        c.resolution == "lost", c.resolved_at >= start, c.resolved_at < end
    )
    return set(connection.scalars(query.distinct()))


@dataclass(frozen=True, slots=True)
class Profile:
    customer_id: str
    home_store: str | None
    segment: str | None
    first_visit_on: date | None
    first_visit_amount: float
    categories: frozenset[str]


def profiles(connection: Connection) -> dict[str, Profile]:
    c = cast(Table, Customer.__table__).c
    query = select(
        c.customer_id, c.home_store, c.segment, c.first_visit_on, c.first_visit_amount, c.categories
    )
    return {
        row[0]: Profile(row[0], row[1], row[2], row[3], float(row[4] or 0), frozenset(row[5] or {}))
        for row in connection.execute(query)
    }


def claim_announcement(
    connection: Connection, week: date, details: dict[str, Any], now: datetime
) -> bool:
    """Record that `week` is announced; False when it already was (by this replica or
    another: the week is the primary key, and a concurrent insert waits for the first)."""
    dialect = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = (
        dialect(_alarms)
        .values(week=week, announced_at=now, details=details)
        .on_conflict_do_nothing(index_elements=["week"])
    )
    return bool(connection.execute(statement).rowcount)


def record_feed_event(
    connection: Connection, kind: str, data: dict[str, Any], now: datetime
) -> None:
    """A change-feed event that concerns no alert (and no customer)."""
    hold_sequence_lock(connection)
    connection.execute(
        insert(_feed),
        [
            {
                "alert_id": None,
                "customer_id": None,
                "type": kind,
                "occurred_at": now,
                "actor": None,
                "data": data,
            }
        ],
    )
