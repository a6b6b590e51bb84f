"""Reports managers steer by: defection rate, reasons, response times, value at risk.

Each report reads the few rows it needs and aggregates them here, in plain Python, so that
the numbers are the same on SQLite and PostgreSQL and easy to check by hand. That reads every
alert of the period: fine for the thousands a chain raises in a quarter, to be moved into SQL
aggregates when it is not.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, cast

from sqlalchemy import Connection, Table, func, select

from app.customers.state import week_index, week_start
from app.models import Alert, Customer, CustomerVisitDay
from app.plans import repository as plans
from app.policy.schemas import PolicyBody

Period = Literal["week", "month"]
Split = Literal["store", "staff"]
_alerts = cast(Table, Alert.__table__)
# A customer who has not visited for this long before a period is not counted as loyal in it.
ACTIVE_WITHIN = timedelta(days=365)


def period_starts(period: Period, start: date, end: date) -> list[date]:
    """The starts of the periods that overlap [start, end)."""
    first = week_start(week_index(start)) if period == "week" else start.replace(day=1)
    starts = []
    current = first
    while current < end:
        starts.append(current)
        current = _next(period, current)
    return starts


def _next(period: Period, day: date) -> date:
    if period == "week":
        return day + timedelta(days=7)
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _instant(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


@dataclass(frozen=True, slots=True)
class RateRow:
    period_start: date
    period_end: date
    store_id: str | None  # with by=store
    staff_id: str | None  # with by=staff
    loyal_at_start: int
    defected: int
    lost_uncalled: int  # of the defected: silent past the "already lost" age, never alerted
    won_back: int
    net: int
    rate: float | None


def defection_rate(
    connection: Connection,
    policy: PolicyBody,
    period: Period,
    start: date,
    end: date,
    by: Split | None,
) -> list[RateRow]:
    """Per period (and store or staff member): loyal customers at its start, customers who
    defected in it (an alert opened then, or, with no alert since their last visit, they
    passed the policy's "already lost" age then: `lost_uncalled`), customers won back in it
    (an alert resolved as won_back), net (defected minus won back) and rate (defected /
    loyal). A customer belongs to their home store and to the staff member who served them
    most."""
    starts = period_starts(period, start, end)
    if not starts:
        return []
    visits = connection.execute(
        select(CustomerVisitDay.customer_id, CustomerVisitDay.day).where(
            CustomerVisitDay.day < _next(period, starts[-1])
        )
    ).all()
    column = Customer.home_staff if by == "staff" else Customer.home_store
    homes: dict[str, str | None] = (
        dict(connection.execute(select(Customer.customer_id, column)).all()) if by else {}
    )
    opened = connection.execute(
        select(_alerts.c.customer_id, _alerts.c.store_id, _alerts.c.opened_at).where(
            _alerts.c.opened_at >= _instant(starts[0]),
            _alerts.c.opened_at < _instant(_next(period, starts[-1])),
        )
    ).all()
    won = connection.execute(
        select(_alerts.c.customer_id, _alerts.c.store_id, _alerts.c.resolved_at).where(
            _alerts.c.resolution == "won_back",
            _alerts.c.resolved_at >= _instant(starts[0]),
            _alerts.c.resolved_at < _instant(_next(period, starts[-1])),
        )
    ).all()
    by_customer: dict[str, list[date]] = defaultdict(list)
    for customer, day in visits:
        by_customer[customer].append(day)
    uncalled = lost_uncalled(connection, by_customer, policy)
    rows = []
    for begin in starts:
        finish = _next(period, begin)
        loyal = Counter(
            homes.get(customer)
            for customer, days in by_customer.items()
            if loyal_at(days, begin, policy)
        )
        defected = _distinct(opened, begin, finish, homes)
        silent = _distinct(uncalled, begin, finish, homes)
        for group, customers in silent.items():
            defected[group] |= customers
        back = _distinct(won, begin, finish, homes)
        for group in sorted(set(loyal) | set(defected) | set(back), key=lambda g: g or ""):
            count, lost, regained = loyal[group], len(defected[group]), len(back[group])
            rows.append(
                RateRow(
                    begin,
                    finish,
                    group if by == "store" else None,
                    group if by == "staff" else None,
                    count,
                    lost,
                    len(silent[group]),
                    regained,
                    lost - regained,
                    round(lost / count, 4) if count else None,
                )
            )
        if not (loyal or defected or back):
            rows.append(RateRow(begin, finish, None, None, 0, 0, 0, 0, 0, None))
    return rows


def lost_uncalled(
    connection: Connection, by_customer: dict[str, list[date]], policy: PolicyBody
) -> list[tuple[str, None, datetime]]:
    """Loyal customers who passed the policy's "already lost" age (as `_distinct` rows:
    customer, no store, the moment they passed it) with no alert opened since their last
    visit: an imported history's long-gone customers are counted here, not called."""
    lost_after = policy.loyalty.lost_after_days
    if lost_after is None:
        return []
    alerted = dict(
        connection.execute(
            select(_alerts.c.customer_id, func.max(_alerts.c.opened_at)).group_by(
                _alerts.c.customer_id
            )
        ).all()
    )
    found = []
    for customer, days in by_customer.items():
        last = max(days)
        if len(days) < policy.loyalty.min_visits:
            continue
        if min(days) + timedelta(days=policy.loyalty.min_tenure_days) > last:
            continue  # never loyal while they came
        latest_alert = alerted.get(customer)
        if latest_alert is not None and latest_alert.date() >= last:
            continue  # called (and counted) when that alert opened
        found.append((customer, None, _instant(last + timedelta(days=lost_after + 1))))
    return found


def loyal_at(days: list[date], start: date, policy: PolicyBody) -> bool:
    before = [day for day in days if day < start]
    if len(before) < policy.loyalty.min_visits:
        return False
    tenure = timedelta(days=policy.loyalty.min_tenure_days)
    return min(before) + tenure <= start and max(before) + ACTIVE_WITHIN >= start


def _distinct(
    rows: Iterable[Any], begin: date, finish: date, homes: dict[str, str | None]
) -> dict[str | None, set[str]]:
    """Distinct customers per group (home store or staff; one group without a split)."""
    found: dict[str | None, set[str]] = defaultdict(set)
    for customer, _store, at in rows:
        if at is not None and begin <= at.date() < finish:
            found[homes.get(customer)].add(customer)
    return found


@dataclass(frozen=True, slots=True)
class ReasonRow:
    reason: str
    store_id: str | None
    outcome: str
    alerts: int
    value_lost: Decimal
    customers: int = 0  # distinct: a call that resolves two of a customer's alerts is one
    plans_opened: int = 0  # plans these resolutions opened (app/plans)
    returned_after_plan: int = 0  # distinct customers of those plans who visited since


def reasons(
    connection: Connection, start: date, end: date, store_id: str | None
) -> list[ReasonRow]:
    """Alerts people resolved with a reason in [start, end), by reason, store and outcome,
    and the distinct customers among them; value lost sums, over the customers resolved as
    lost, the largest value at risk of their alerts (a customer with two alerts, say they
    stopped coming and their spend fell, is lost once: the whole of what they were worth,
    not both reasons' shares added). Plans opened counts the plans the resolutions opened
    (a customer's alerts resolved in one call open one), and returned after plan the distinct
    customers of those plans who visited on a later day than it opened, to this day."""
    query = select(
        _alerts.c.reason,
        _alerts.c.store_id,
        _alerts.c.resolution,
        _alerts.c.value_at_risk,
        _alerts.c.customer_id,
        _alerts.c.id,
    ).where(
        _alerts.c.reason.is_not(None),
        _alerts.c.resolved_at >= _instant(start),
        _alerts.c.resolved_at < _instant(end),
    )
    if store_id is not None:
        query = query.where(_alerts.c.store_id == store_id)
    counts: Counter[tuple[str, str | None, str]] = Counter()
    worth: dict[tuple[str, str | None, str], dict[str, Decimal]] = defaultdict(dict)
    alert_keys: dict[int, tuple[str, str | None, str]] = {}
    for reason, store, outcome, value, customer, alert_id in connection.execute(query):
        key = (reason, store, outcome)
        counts[key] += 1
        worth[key][customer] = max(value, worth[key].get(customer, value))
        alert_keys[alert_id] = key
    opened: Counter[tuple[str, str | None, str]] = Counter()
    returned: dict[tuple[str, str | None, str], set[str]] = defaultdict(set)
    for alert_id, plan in plans.opened_by(connection, list(alert_keys)).items():
        opened[alert_keys[alert_id]] += 1
        if plan.customer_returned_on is not None:
            returned[alert_keys[alert_id]].add(plan.customer_id)
    rows = []
    for key, count in sorted(
        counts.items(), key=lambda item: (-item[1], item[0][0], item[0][1] or "", item[0][2])
    ):
        reason, store, outcome = key
        lost = sum(worth[key].values(), Decimal(0)) if outcome == "lost" else Decimal(0)
        rows.append(
            ReasonRow(
                reason,
                store,
                outcome,
                count,
                lost,
                len(worth[key]),
                opened[key],
                len(returned[key]),
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class ResponseRow:
    store_id: str | None
    alerts: int
    acknowledged: int
    resolved_by_people: int
    median_hours_to_acknowledge: float | None
    p90_hours_to_acknowledge: float | None
    median_hours_to_resolve: float | None
    p90_hours_to_resolve: float | None


def response_times(connection: Connection, start: date, end: date) -> list[ResponseRow]:
    """For alerts opened in [start, end), per store: time to acknowledgement and to a
    person's resolution (median and 90th percentile, in hours)."""
    rows = connection.execute(
        select(
            _alerts.c.store_id,
            _alerts.c.opened_at,
            _alerts.c.acknowledged_at,
            _alerts.c.resolved_at,
            _alerts.c.resolved_by,
        ).where(_alerts.c.opened_at >= _instant(start), _alerts.c.opened_at < _instant(end))
    ).all()
    stores: dict[str | None, list[Any]] = defaultdict(list)
    for row in rows:
        stores[row[0]].append(row)
    result = []
    for store, alerts in sorted(stores.items(), key=lambda item: item[0] or ""):
        to_ack = [_hours(a[2] - a[1]) for a in alerts if a[2] is not None]
        to_resolve = [_hours(a[3] - a[1]) for a in alerts if a[3] is not None and a[4] is not None]
        result.append(
            ResponseRow(
                store,
                len(alerts),
                len(to_ack),
                len(to_resolve),
                _median(to_ack),
                _p90(to_ack),
                _median(to_resolve),
                _p90(to_resolve),
            )
        )
    return result


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _p90(values: list[float]) -> float | None:
    """The 90th percentile, by linear interpolation between closest ranks."""
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 2)
    return round(statistics.quantiles(values, n=10, method="inclusive")[-1], 2)


@dataclass(frozen=True, slots=True)
class ValueRow:
    store_id: str | None
    severity: str
    alerts: int
    value_at_risk: Decimal


def value_at_risk(connection: Connection) -> list[ValueRow]:
    """Alerts not resolved yet: their count and total value at risk by store and severity."""
    query = select(_alerts.c.store_id, _alerts.c.severity, _alerts.c.value_at_risk).where(
        _alerts.c.resolved_at.is_(None)
    )
    counts: Counter[tuple[str | None, str]] = Counter()
    totals: dict[tuple[str | None, str], Decimal] = defaultdict(Decimal)
    for store, severity, value in connection.execute(query):
        counts[(store, severity)] += 1
        totals[(store, severity)] += value
    order = {"high": 0, "medium": 1, "low": 2}
    return [
        ValueRow(store, severity, counts[(store, severity)], totals[(store, severity)])
        for store, severity in sorted(counts, key=lambda k: (k[0] or "", order.get(k[1], 3)))
    ]
