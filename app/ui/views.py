"""What the page shows, read in one transaction per view and shaped for the templates.

The numbers come from the same functions as the API (`/v1/cases`' alerts, the customer
endpoint's reader, the reports' service), so the page and the API cannot disagree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from app.alerts import queries
from app.alerts.queries import CaseFilter, CaseSort, FeedEvent
from app.alerts.repository import AlertRow
from app.customers import repository as customers
from app.customers.state import CustomerState
from app.outreach import service as outreach
from app.plans import repository as plans
from app.plans.repository import PlanFilter, PlanRow
from app.policy import service as policies
from app.policy.schemas import PolicyBody
from app.quality import service as quality
from app.reports import service as reports
from app.reports.service import RateRow, ReasonRow, ResponseRow, ValueRow

PAGE_SIZE = 25
PLANS_SHOWN = 10  # a customer's plans, and the manager's open plans falling due
PLANS_DUE_WITHIN = timedelta(days=7)
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
    feed_position: int  # the newest change's seq: the page follows the feed from there


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
        feed_position=queries.latest_seq(connection),
    )


def questions_for(policy: PolicyBody, rule: str) -> list[str]:
    questions: list[str] = getattr(policy.questions, rule, [])
    return questions


@dataclass(slots=True)
class CustomerExtras:
    history: list[FeedEvent]
    questions: dict[str, list[str]]
    plans: list[PlanRow] = field(default_factory=list)  # the soonest follow-up first


def customer_extras(connection: Connection, customer_id: str) -> CustomerExtras:
    policy = policies.current(connection).body
    return CustomerExtras(
        history=queries.customer_history(connection, customer_id),
        questions={rule: questions_for(policy, rule) for rule in RULE_NAMES},
        plans=plans.page(connection, PlanFilter(customer_id=customer_id), PLANS_SHOWN, None),
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
    plans_due: list[PlanRow] = field(default_factory=list)  # open, overdue or due within 7 days
    outreach: outreach.Effect | None = None
    quality: quality.Report | None = None


@dataclass(frozen=True, slots=True)
class ManagerSpans:
    """The spans of the manager's view: one definition for the page and its CSVs, so that
    a table and its download always cover the same days."""

    today: date
    month: date  # the month in progress
    months: tuple[date, date]  # 13 months, to the end of the current one
    recent: tuple[date, date]  # 90 days to tomorrow: reasons, response times
    outreach: tuple[date, date]  # cases opened in the last 365 days (the report's default)
    quality: tuple[date, date]  # the model-quality report's default weeks

    @classmethod
    def of(cls, today: date, policy: PolicyBody) -> ManagerSpans:
        current = month_start(today)
        tomorrow = today + timedelta(days=1)
        return cls(
            today,
            current,
            (shift_months(current, -12), shift_months(current, 1)),
            (tomorrow - timedelta(days=90), tomorrow),
            (tomorrow - timedelta(days=365), tomorrow),
            quality.default_span(policy.horizon_days, today),
        )


def outreach_effect(
    connection: Connection, policy: PolicyBody, span: tuple[date, date], now: datetime
) -> outreach.Effect:
    """The report's effect over the span (`/v1/reports/outreach-effect`)."""
    window = timedelta(days=policy.outreach.window_days)
    return outreach.effect(connection, policy, outreach.cases(connection, *span, window, now))


def month_start(day: date) -> date:
    return day.replace(day=1)


def shift_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def manager_view(connection: Connection, now: datetime) -> ManagerView:
    """This month against the last and the same month a year ago, per store and per staff
    member; reasons over the last 90 days weighted by the value they cost; response times
    and value at risk; what calling changes, and how good the scores are. Every number is
    the reports API's for the same span."""
    policy = policies.current(connection).body
    spans = ManagerSpans.of(now.date(), policy)
    months = reports.defection_rate(connection, policy, "month", *spans.months, None)
    by_store = reports.defection_rate(connection, policy, "month", *spans.months, "store")
    by_staff = reports.defection_rate(connection, policy, "month", *spans.months, "staff")
    reason_rows = reports.reasons(connection, *spans.recent, None)
    lost, won = _reasons(reason_rows)
    values = reports.value_at_risk(connection)
    return ManagerView(
        period_start=spans.month,
        period_end=spans.months[1],
        months=[row for row in months if row.store_id is None and row.staff_id is None],
        overall=_compare(months, spans.month, lambda row: None)[0],
        stores=_compare(by_store, spans.month, lambda row: row.store_id),
        staff=_compare(by_staff, spans.month, lambda row: row.staff_id),
        lost_reasons=lost,
        won_reasons=won,
        reasons_start=spans.recent[0],
        reasons_end=spans.recent[1],
        won_back=sum(count for _, count in won),
        lost=sum(count for _, count, _ in lost),
        response_times=reports.response_times(connection, *spans.recent),
        value_by_store=_by_store(values),
        value_at_risk_total=sum((row.value_at_risk for row in values), Decimal(0)),
        plans_due=plans.page(
            connection,
            PlanFilter(
                status=["open"], due_before=spans.today + PLANS_DUE_WITHIN + timedelta(days=1)
            ),
            PLANS_SHOWN,
            None,
        ),
        outreach=outreach_effect(connection, policy, spans.outreach, now),
        quality=quality.report(connection, *spans.quality, now),
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
