"""What the page shows, read in one transaction per view and shaped for the templates.

The numbers come from the same functions as the API (`/v1/cases`' alerts, the customer
endpoint's reader, the reports' service), so the page and the API cannot disagree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from app.alerts import queries
from app.alerts.queries import CaseFilter, CaseSort, FeedEvent
from app.alerts.repository import AlertRow
from app.customers import repository as customers
from app.customers.state import CustomerState
from app.policy import service as policies
from app.policy.schemas import PolicyBody
from app.reports import service as reports
from app.reports.service import RateRow, ReasonRow, ResponseRow, ValueRow

PAGE_SIZE = 25
RULE_NAMES = {
    "inactivity": "Stopped coming",
    "frequency_drop": "Comes less often",
    "spend_drop": "Spends less",
    "category_lapse": "Stopped buying a category",
}
EVENT_NAMES = {
    "alert.opened": "opened",
    "alert.updated": "updated",
    "alert.acknowledged": "acknowledged",
    "alert.snoozed": "snoozed",
    "alert.escalated": "escalated (nobody resolved it in time)",
    "alert.assigned": "assigned",
    "alert.noted": "note",
    "alert.resolved": "resolved",
}


@dataclass(slots=True)
class Case:
    """One customer to call: their matching alerts, the strongest first, and their pattern."""

    alerts: list[AlertRow]
    state: CustomerState | None
    questions: list[str]
    today: date

    @property
    def head(self) -> AlertRow:
        return self.alerts[0]

    @property
    def customer_id(self) -> str:
        return self.head.customer_id

    @property
    def opened_on(self) -> date:
        return min(alert.opened_at for alert in self.alerts).date()

    @property
    def usual_gap_days(self) -> float | None:
        """Their usual days between visits, over their whole history."""
        state = self.state
        if state is None or state.visit_days < 2 or state.first_visit_on is None:
            return None
        assert state.last_visit_on is not None
        return (state.last_visit_on - state.first_visit_on).days / (state.visit_days - 1)

    @property
    def expected_visit_on(self) -> date | None:
        gap = self.usual_gap_days
        if gap is None or self.state is None or self.state.last_visit_on is None:
            return None
        return self.state.last_visit_on + timedelta(days=round(gap))

    @property
    def statuses(self) -> set[str]:
        return {alert.status for alert in self.alerts}

    @property
    def assigned_to(self) -> str | None:
        return next((a.assigned_to for a in self.alerts if a.assigned_to), None)


@dataclass(slots=True)
class CallList:
    total: int
    cases: list[Case]
    page: int
    pages: int
    first: int  # the 1-based number of the page's first case
    stores: list[str]
    assignees: list[str]
    feed_position: int
    reasons: list[str] = field(default_factory=list)


def call_list(
    connection: Connection, filters: CaseFilter, sort: CaseSort, page: int, today: date
) -> CallList:
    total, groups = queries.case_list(connection, filters, sort, (page - 1) * PAGE_SIZE, PAGE_SIZE)
    policy = policies.current(connection).body
    states = customers.read_states(connection, [alerts[0].customer_id for alerts in groups])
    cases = [
        Case(
            alerts,
            states.get(alerts[0].customer_id),
            questions_for(policy, alerts[0].rule),
            today,
        )
        for alerts in groups
    ]
    pages = max(1, -(-total // PAGE_SIZE))
    return CallList(
        total=total,
        cases=cases,
        page=page,
        pages=pages,
        first=(page - 1) * PAGE_SIZE + 1,
        stores=queries.stores(connection),
        assignees=queries.assignees(connection),
        feed_position=feed_position(connection),
    )


def questions_for(policy: PolicyBody, rule: str) -> list[str]:
    questions: list[str] = getattr(policy.questions, rule, [])
    return questions


def feed_position(connection: Connection) -> int:
    """The newest change's seq: the page follows the feed from there."""
    return queries.latest_seq(connection)


@dataclass(slots=True)
class CustomerExtras:
    history: list[FeedEvent]
    questions: dict[str, list[str]]


def customer_extras(connection: Connection, customer_id: str) -> CustomerExtras:
    policy = policies.current(connection).body
    return CustomerExtras(
        history=queries.customer_history(connection, customer_id),
        questions={rule: questions_for(policy, rule) for rule in RULE_NAMES},
    )


@dataclass(slots=True)
class Comparison:
    """A rate this period beside the last and the same period a year before."""

    group: str | None
    current: RateRow | None
    previous: RateRow | None
    last_year: RateRow | None


@dataclass(slots=True)
class ManagerView:
    period_start: date
    period_end: date
    months: list[RateRow]  # the whole chain, oldest first, the current (incomplete) last
    overall: Comparison
    stores: list[Comparison]
    staff: list[Comparison]
    lost_reasons: list[tuple[str, int, Decimal]]  # reason, customers lost, value lost
    won_reasons: list[tuple[str, int]]
    reasons_start: date
    reasons_end: date
    won_back: int
    lost: int
    response_times: list[ResponseRow]
    value_by_store: list[tuple[str | None, int, int, Decimal]]  # store, alerts, high, value
    value_at_risk_total: Decimal


def month_start(day: date) -> date:
    return day.replace(day=1)


def shift_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def manager_view(connection: Connection, today: date) -> ManagerView:
    """This month against the last and the same month a year ago, per store and per staff
    member; reasons over the last 90 days weighted by the value they cost; response times
    and value at risk. Every number is the reports API's for the same span."""
    policy = policies.current(connection).body
    current = month_start(today)
    first = shift_months(current, -12)
    end = shift_months(current, 1)
    months = reports.defection_rate(connection, policy, "month", first, end, None)
    by_store = reports.defection_rate(connection, policy, "month", first, end, "store")
    by_staff = reports.defection_rate(connection, policy, "month", first, end, "staff")
    reasons_end = today + timedelta(days=1)
    reasons_start = reasons_end - timedelta(days=90)
    reason_rows = reports.reasons(connection, reasons_start, reasons_end, None)
    lost, won = _reasons(reason_rows)
    values = reports.value_at_risk(connection)
    return ManagerView(
        period_start=current,
        period_end=end,
        months=[row for row in months if row.store_id is None and row.staff_id is None],
        overall=_compare(months, current, lambda row: None)[0],
        stores=_compare(by_store, current, lambda row: row.store_id),
        staff=_compare(by_staff, current, lambda row: row.staff_id),
        lost_reasons=lost,
        won_reasons=won,
        reasons_start=reasons_start,
        reasons_end=reasons_end,
        won_back=sum(count for _, count in won),
        lost=sum(count for _, count, _ in lost),
        response_times=reports.response_times(connection, reasons_start, reasons_end),
        value_by_store=_by_store(values),
        value_at_risk_total=sum((row.value_at_risk for row in values), Decimal(0)),
    )


def _compare(rows: list[RateRow], current: date, group_of: Any) -> list[Comparison]:
    table: dict[str | None, dict[date, RateRow]] = defaultdict(dict)
    for row in rows:
        table[group_of(row)][row.period_start] = row
    previous, last_year = shift_months(current, -1), shift_months(current, -12)
    found = [
        Comparison(group, periods.get(current), periods.get(previous), periods.get(last_year))
        for group, periods in table.items()
        # customers with no home store or staff, when there are none: no row of zeros
        if group is not None or any(row.loyal_at_start or row.defected for row in periods.values())
    ]
    found.sort(key=lambda c: (-(c.current.rate or 0) if c.current else 0, c.group or ""))
    return found or [Comparison(None, None, None, None)]


def _reasons(rows: list[ReasonRow]) -> tuple[list[tuple[str, int, Decimal]], list[tuple[str, int]]]:
    """Lost customers per reason, weighted by the value lost (highest first); won back per
    reason apart (a reason a customer came back from is not a reason they left for)."""
    lost_count: dict[str, int] = defaultdict(int)
    lost_value: dict[str, Decimal] = defaultdict(Decimal)
    won: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.outcome == "lost":
            lost_count[row.reason] += row.customers
            lost_value[row.reason] += row.value_lost
        elif row.outcome == "won_back":
            won[row.reason] += row.customers
    lost = sorted(
        ((reason, lost_count[reason], lost_value[reason]) for reason in lost_count),
        key=lambda item: (-item[2], -item[1], item[0]),
    )
    return lost, sorted(won.items(), key=lambda item: (-item[1], item[0]))


def _by_store(rows: list[ValueRow]) -> list[tuple[str | None, int, int, Decimal]]:
    alerts: dict[str | None, int] = defaultdict(int)
    high: dict[str | None, int] = defaultdict(int)
    value: dict[str | None, Decimal] = defaultdict(Decimal)
    for row in rows:
        alerts[row.store_id] += row.alerts
        value[row.store_id] += row.value_at_risk
        if row.severity == "high":
            high[row.store_id] += row.alerts
    return sorted(
        ((store, alerts[store], high[store], value[store]) for store in alerts),
        key=lambda item: (-item[3], item[0] or ""),
    )
