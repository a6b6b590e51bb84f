"""What happened after each case of the outreach experiment opened, and the effect of calling.

Nobody types the outcome: it is read from the purchases. A case *returned* when its customer
made a purchase in the policy's `outreach.window_days` after the case opened; its *value* is
the customer's net spend in that window (purchases minus refunds, 0 when they stayed away).
A case counts once its window has passed (`matured`): counting returns before then would
favour whichever arm returns sooner. Both arms are read the same way, whether or not anyone
worked the case (intention to treat: a contact case nobody called still counts as contact).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, Table, select

from app.models import Alert, Policy, PurchaseEvent
from app.outreach import stats
from app.policy.schemas import PolicyBody

_alerts = cast(Table, Alert.__table__)
_events = cast(Table, PurchaseEvent.__table__)
_CASE_COLUMNS = (
    "id",
    "customer_id",
    "arm",
    "rule",
    "severity",
    "store_id",
    "opened_at",
    "policy_version",
)
_CHUNK = 900  # below SQLite's bound-parameter limit
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Case:
    case_id: int
    customer_id: str
    arm: str
    rule: str
    severity: str
    store_id: str | None
    opened_at: datetime
    policy_version: int
    returned_at: datetime | None
    net_spend: Decimal
    matured: bool  # its window has passed: its outcome is final


def cases(
    connection: Connection, start: date, end: date, window: timedelta, now: datetime
) -> list[Case]:
    """The experiment's cases opened in [start, end), with what happened next."""
    c = _alerts.c
    opened = connection.execute(
        select(*(c[name] for name in _CASE_COLUMNS))
        .where(
            c.id == c.case_id,
            c.arm.is_not(None),
            c.opened_at >= _instant(start),
            c.opened_at < _instant(end),
        )
        .order_by(c.opened_at, c.id)
    ).all()
    found = []
    # In order of opening, a chunk at a time: each chunk's customers' events are read over
    # that chunk's few days plus the window, not their whole history (20,000 cases and
    # 600,000 events: 3.9 s read at once, see bench/README.md).
    for begin in range(0, len(opened), _CHUNK):
        chunk = opened[begin : begin + _CHUNK]
        purchases = _purchases(connection, chunk, window)
        found += [_followed(row, purchases.get(row.customer_id, ()), window, now) for row in chunk]
    found.sort(key=lambda case: case.case_id)
    return found


def _followed(
    row: Any, purchases: Iterable[tuple[datetime, str, Decimal]], window: timedelta, now: datetime
) -> Case:
    """The case, with what its customer bought in the window after it opened."""
    until = row.opened_at + window
    after = [(at, kind, amount) for at, kind, amount in purchases if row.opened_at < at <= until]
    returned = min((at for at, kind, _ in after if kind == "purchase"), default=None)
    spend = sum((a if k == "purchase" else -a for _, k, a in after), Decimal(0))
    return Case(
        case_id=row.id,
        customer_id=row.customer_id,
        arm=row.arm,
        rule=row.rule,
        severity=row.severity,
        store_id=row.store_id,
        opened_at=row.opened_at,
        policy_version=row.policy_version,
        returned_at=returned,
        net_spend=spend,
        matured=until <= now,
    )


def _purchases(
    connection: Connection, chunk: Sequence[Any], window: timedelta
) -> dict[str, list[tuple[datetime, str, Decimal]]]:
    """The events of the chunk's customers from its first opening to its last window's end
    (one index range per customer: `ix_purchase_events_customer_occurred`)."""
    found: dict[str, list[tuple[datetime, str, Decimal]]] = defaultdict(list)
    if not chunk:
        return found
    first = min(row.opened_at for row in chunk)
    last = max(row.opened_at for row in chunk) + window
    e = _events.c
    query = select(e.customer_id, e.occurred_at, e.kind, e.amount).where(
        e.customer_id.in_(sorted({row.customer_id for row in chunk})),
        e.occurred_at > first,
        e.occurred_at <= last,
    )
    for customer, at, kind, amount in connection.execute(query):
        found[customer].append((at, kind, amount))
    return found


def _instant(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


@dataclass(frozen=True, slots=True)
class FollowedCase:
    """One case as the outreach-cases report shows it."""

    case_id: int
    customer_id: str
    arm: str
    rule: str
    severity: str
    store_id: str | None
    opened_at: datetime
    window_ends_at: datetime
    outcome: str  # returned, stayed_away, or following (its window is not over)
    returned_at: datetime | None
    days_to_return: float | None
    net_spend: Decimal  # in the window so far


def followed(case: Case, window: timedelta) -> FollowedCase:
    if case.returned_at is not None:
        outcome = "returned"
    else:
        outcome = "stayed_away" if case.matured else "following"
    days = None
    if case.returned_at is not None:
        days = round((case.returned_at - case.opened_at).total_seconds() / 86400, 1)
    return FollowedCase(
        case.case_id,
        case.customer_id,
        case.arm,
        case.rule,
        case.severity,
        case.store_id,
        case.opened_at,
        case.opened_at + window,
        outcome,
        case.returned_at,
        days,
        case.net_spend,
    )


@dataclass(frozen=True, slots=True)
class EffectRow:
    """One group's comparison (dimension "all" is every matured case)."""

    dimension: str  # all, rule, severity, store, month
    value: str | None
    contact_cases: int
    contact_returned: int
    contact_return_rate: float | None
    control_cases: int
    control_returned: int
    control_return_rate: float | None
    difference: float | None  # contact - control, in return rate
    difference_low: float | None
    difference_high: float | None
    contact_mean_spend: Decimal | None
    control_mean_spend: Decimal | None
    spend_difference: Decimal | None
    spend_difference_low: Decimal | None
    spend_difference_high: Decimal | None
    # What calling the contact cases brought that they would not have without it: the
    # differences times the contact cases (None while the difference is unknown).
    extra_returns: float | None
    value_recovered: Decimal | None
    pending_cases: int  # opened, window not over yet: not counted above


@dataclass(frozen=True, slots=True)
class Effect:
    rows: list[EffectRow]
    holdout: float
    window_days: int
    minimum_effect: float
    # Matured cases it takes to see `minimum_effect` over the control group's return rate
    # (both arms), at the current holdout; None without a holdout.
    cases_needed: int | None
    cases_so_far: int
    # The holdout differed between the policies the span's cases opened under: the arms'
    # mix of periods then differs, and "all" may mix the trends (compare by month).
    holdout_changed: bool
    verdict: str


DIMENSIONS: dict[str, Callable[[Case], str | None]] = {
    "rule": lambda case: case.rule,
    "severity": lambda case: case.severity,
    "store": lambda case: case.store_id,
    "month": lambda case: case.opened_at.strftime("%Y-%m"),
}


def effect(connection: Connection, policy: PolicyBody, found: Sequence[Case]) -> Effect:
    rows = [_row("all", None, found)]
    for name, key in DIMENSIONS.items():
        groups: dict[str | None, list[Case]] = defaultdict(list)
        for case in found:
            groups[key(case)].append(case)
        rows += [_row(name, value, groups[value]) for value in sorted(groups, key=_text)]
    overall = rows[0]
    matured = overall.contact_cases + overall.control_cases
    control_rate = (
        overall.control_return_rate
        if overall.control_return_rate is not None
        else overall.contact_return_rate
    )
    needed = stats.cases_needed(
        0.5 if control_rate is None else control_rate,
        policy.outreach.minimum_effect,
        policy.holdout,
    )
    return Effect(
        rows,
        policy.holdout,
        policy.outreach.window_days,
        policy.outreach.minimum_effect,
        needed,
        matured,
        _holdout_changed(connection, found),
        _verdict(overall, needed, matured, policy),
    )


def _text(value: str | None) -> str:
    return value or ""


def _row(dimension: str, value: str | None, found: Iterable[Case]) -> EffectRow:
    arms: dict[str, list[Case]] = {"contact": [], "control": []}
    pending = 0
    for case in found:
        if case.matured:
            arms[case.arm].append(case)
        else:
            pending += 1
    contact, control = arms["contact"], arms["control"]
    back_1 = sum(case.returned_at is not None for case in contact)
    back_0 = sum(case.returned_at is not None for case in control)
    rate = stats.rate_difference(back_1, len(contact), back_0, len(control))
    spend = stats.mean_difference(
        [float(case.net_spend) for case in contact], [float(case.net_spend) for case in control]
    )
    return EffectRow(
        dimension,
        value,
        len(contact),
        back_1,
        _share(back_1, len(contact)),
        len(control),
        back_0,
        _share(back_0, len(control)),
        None if rate is None else round(rate.estimate, 4),
        None if rate is None else round(rate.low, 4),
        None if rate is None else round(rate.high, 4),
        _mean(contact),
        _mean(control),
        None if spend is None else _money(spend.estimate),
        None if spend is None else _money(spend.low),
        None if spend is None else _money(spend.high),
        None if rate is None else round(rate.estimate * len(contact), 1),
        None if spend is None else _money(spend.estimate * len(contact)),
        pending,
    )


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _mean(found: Sequence[Case]) -> Decimal | None:
    if not found:
        return None
    return (sum((case.net_spend for case in found), Decimal(0)) / len(found)).quantize(CENT)


def _money(value: float) -> Decimal:
    return Decimal(str(value)).quantize(CENT)


def _holdout_changed(connection: Connection, found: Sequence[Case]) -> bool:
    versions = sorted({case.policy_version for case in found})
    if len(versions) < 2:
        return False
    shares = {
        float(body.get("holdout", 0.0))
        for body in connection.scalars(
            select(Policy.body).where(Policy.version.in_(versions[:_CHUNK]))
        )
    }
    if 0 in versions:  # the built-in defaults, before any policy was stored
        shares.add(PolicyBody().holdout)
    return len(shares) > 1


def _verdict(overall: EffectRow, needed: int | None, matured: int, policy: PolicyBody) -> str:
    """One sentence for the manager: what the numbers say, or what is missing."""
    if policy.holdout <= 0 and overall.control_cases == 0:
        return (
            "No control group: set the policy's holdout (0.1 is usual) to measure what "
            "calling customers changes."
        )
    if overall.difference is None:
        return "No case has been followed to the end of its window yet in both groups."
    assert overall.difference_low is not None
    assert overall.difference_high is not None
    low, high = overall.difference_low, overall.difference_high
    span = f"{_points(low)} to {_points(high)} points"
    if low > 0:
        return (
            f"Calling raises the return rate by {overall.difference * 100:.1f} points "
            f"(95 % interval {low * 100:.1f} to {high * 100:.1f})."
        )
    if high < 0:
        return (
            f"Called customers came back less often, by {-overall.difference * 100:.1f} "
            f"points (95 % interval {-high * 100:.1f} to {-low * 100:.1f})."
        )
    wanted = f"{policy.outreach.minimum_effect * 100:g} points"
    if needed is not None and matured < needed:
        return (
            f"No clear effect yet ({span}): about {needed:,} followed cases are needed to "
            f"see {wanted}; {matured:,} so far."
        )
    return f"No effect of {wanted} or more is visible ({span})."


def _points(share: float) -> str:
    return f"{share * 100:+.1f}".replace("+0.0", "0.0").replace("-0.0", "0.0")
