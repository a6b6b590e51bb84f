"""The policy's rules applied to one customer's pattern and scores: pure functions, no I/O.

Each rule answers whether it fires now, with the numbers behind the answer (the evidence an
alert carries), and on which day its answer could change if no new event comes: the
evaluation stores the earliest such day as the customer's next check, so the sweeper looks
at a customer exactly when something can have happened, and at nobody else.
"""

from __future__ import annotations

import enum
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from app.customers.state import CustomerState, week_index, week_start
from app.kit.db import Money
from app.policy.schemas import (
    CategoryLapse,
    FrequencyDrop,
    Inactivity,
    PolicyBody,
    Rule,
    Severity,
    SpendDrop,
)
from app.scoring.service import Scores


class Unknown(enum.Enum):
    """A value that was not worked out (cheaper to leave to the sweeper)."""

    UNKNOWN = "unknown"


UNKNOWN = Unknown.UNKNOWN

# An open alert's numbers are refreshed at least this often, even if nothing else is due.
REFRESH_OPEN_ALERTS = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Verdict:
    firing: bool
    score: float  # how far the rule is crossed: 0 (not at all) to 1
    # The numbers behind the answer, built only when an alert needs them: most evaluations
    # (every event, every sweep) fire nothing, and formatting evidence was half their cost.
    explain: Callable[[], dict[str, Any]]
    changes_on: date | None = None  # when the answer can change without new events

    @property
    def evidence(self) -> dict[str, Any]:
        return self.explain()


@dataclass(slots=True)
class Evaluation:
    """What the policy says about one customer at one moment."""

    eligible: bool  # loyal, not excluded, worth enough: may raise alerts
    excluded: bool
    severity: Severity
    verdicts: dict[Rule, Verdict] = field(default_factory=dict)  # enabled rules only
    next_check_at: datetime | None = None


def evaluate(
    state: CustomerState,
    scores: Scores | None,
    policy: PolicyBody,
    now: datetime,
    *,
    inactivity_crossing: date | Unknown | None,
    has_open_alerts: bool,
) -> Evaluation:
    """Apply every enabled rule. `inactivity_crossing` is the day the defection score would
    reach the inactivity threshold with no purchase (from `scoring.quiet_until`; None: not
    within two years), or UNKNOWN when it was not worked out."""
    as_of = now.date()
    excluded = _excluded(state, policy)
    value = scores.value_at_risk if scores else 0.0
    evaluation = Evaluation(eligible=False, excluded=excluded, severity=severity_of(value, policy))
    if scores is None or state.first_visit_on is None or state.last_visit_on is None:
        return evaluation
    rules = policy.rules
    checks: list[date | None] = []
    if rules.inactivity.enabled:
        verdict = _inactivity(state, scores, rules.inactivity, policy, as_of, inactivity_crossing)
        evaluation.verdicts["inactivity"] = verdict
    windows: dict[tuple[int, int], _Totals | Verdict] = {}  # both rules may share them

    def totals(rule: FrequencyDrop | SpendDrop) -> _Totals | Verdict:
        key = (rule.recent_weeks, rule.baseline_weeks)
        if key not in windows:
            windows[key] = _windows(state, rule, as_of)
        return windows[key]

    if rules.frequency_drop.enabled:
        frequency = rules.frequency_drop
        evaluation.verdicts["frequency_drop"] = _frequency_drop(frequency, totals(frequency))
    if rules.spend_drop.enabled:
        evaluation.verdicts["spend_drop"] = _spend_drop(rules.spend_drop, totals(rules.spend_drop))
    if rules.category_lapse.enabled:
        evaluation.verdicts["category_lapse"] = _category_lapse(state, rules.category_lapse, as_of)
    loyal, loyal_from = _loyalty(state, policy, as_of)
    evaluation.eligible = loyal and not excluded and value >= policy.min_value_at_risk
    if loyal or loyal_from is not None or has_open_alerts:
        # Customers short of the loyalty visits cannot raise alerts until they visit again:
        # nothing to check for them in the meantime.
        checks.extend(verdict.changes_on for verdict in evaluation.verdicts.values())
        checks.append(loyal_from)
    evaluation.next_check_at = _next_check(state.customer_id, checks, now, has_open_alerts)
    return evaluation


def may_defect(state: CustomerState, policy: PolicyBody) -> bool:
    """Whether the customer has the visits to count as loyal (now, or once tenure comes)."""
    return state.first_visit_on is not None and state.visit_days >= policy.loyalty.min_visits


def severity_of(value_at_risk: float, policy: PolicyBody) -> Severity:
    if value_at_risk >= policy.severity.high_value_at_risk:
        return "high"
    if value_at_risk >= policy.severity.medium_value_at_risk:
        return "medium"
    return "low"


def _excluded(state: CustomerState, policy: PolicyBody) -> bool:
    rules = policy.exclusions
    return (
        state.customer_id in rules.customers
        or (state.home_store is not None and state.home_store in rules.stores)
        or (state.segment is not None and state.segment in rules.segments)
    )


def _loyalty(state: CustomerState, policy: PolicyBody, as_of: date) -> tuple[bool, date | None]:
    """Whether the customer counts as loyal, and else the day tenure alone would make them."""
    assert state.first_visit_on is not None
    if state.visit_days < policy.loyalty.min_visits:
        return False, None  # only a visit can change this
    tenure_from = state.first_visit_on + timedelta(days=policy.loyalty.min_tenure_days)
    return as_of >= tenure_from, None if as_of >= tenure_from else tenure_from


def mean_gap_days(state: CustomerState) -> float | None:
    """The customer's own mean number of days between visits."""
    if state.visit_days < 2 or state.first_visit_on is None or state.last_visit_on is None:
        return None
    return (state.last_visit_on - state.first_visit_on).days / (state.visit_days - 1)


def _inactivity(
    state: CustomerState,
    scores: Scores,
    rule: Inactivity,
    policy: PolicyBody,
    as_of: date,
    crossing: date | Unknown | None,
) -> Verdict:
    last = state.last_visit_on
    assert last is not None
    silent = max((as_of - last).days, 0)
    gap = mean_gap_days(state)
    by_score = rule.score_threshold is not None and (
        scores.p_no_purchase_within >= rule.score_threshold
    )
    gap_limit = None
    if rule.gap_multiple is not None and gap is not None and gap > 0:
        gap_limit = max(rule.min_days, math.ceil(rule.gap_multiple * gap))
    by_gap = gap_limit is not None and silent >= gap_limit
    firing = silent >= rule.min_days and (by_score or by_gap)
    changes: list[date | None] = []
    if not firing:
        earliest = last + timedelta(days=rule.min_days)
        if gap_limit is not None:
            changes.append(last + timedelta(days=gap_limit))
        if rule.score_threshold is not None and crossing is UNKNOWN:
            changes.append(earliest)  # the first day it could fire; the sweeper looks closer
        elif rule.score_threshold is not None and isinstance(crossing, date):
            changes.append(max(crossing, earliest))
    expected_next = None if gap is None else last + timedelta(days=round(gap))

    def explain() -> dict[str, Any]:
        return {
            "last_visit_on": last.isoformat(),
            "days_since_last_visit": silent,
            "mean_gap_days": None if gap is None else round(gap, 1),
            "expected_next_visit_on": expected_next and expected_next.isoformat(),
            "p_no_purchase_within": round(scores.p_no_purchase_within, 4),
            "horizon_days": policy.horizon_days,
            "p_alive": round(scores.p_alive, 4),
            "score_threshold": rule.score_threshold,
            "gap_limit_days": gap_limit,
            "triggered_by": [name for name, hit in (("score", by_score), ("gap", by_gap)) if hit],
        }

    return Verdict(firing, scores.p_no_purchase_within, explain, _earliest(changes, as_of))


def _no_baseline() -> dict[str, Any]:
    return {"reason": "not enough baseline yet"}


@dataclass(frozen=True, slots=True)
class _Totals:
    """Visits and net spend in the recent and baseline windows of complete weeks."""

    recent: int
    recent_amount: int
    baseline: int
    baseline_amount: int
    baseline_weeks: int  # the baseline's weeks since the first visit
    baseline_squares: int  # sum of squared visits per baseline week (for the dispersion)
    changes_on: date | None


def _windows(
    state: CustomerState, rule: FrequencyDrop | SpendDrop, as_of: date
) -> _Totals | Verdict:
    """The window totals, or a quiet verdict while under half the baseline is known."""
    assert state.first_visit_on is not None
    first_week = week_index(state.first_visit_on)
    current = week_index(as_of)
    recent_from = current - rule.recent_weeks
    baseline_from = max(recent_from - rule.baseline_weeks, first_week)
    known_weeks = recent_from - baseline_from
    if known_weeks * 2 < rule.baseline_weeks:
        known_on = week_start(first_week + rule.recent_weeks + math.ceil(rule.baseline_weeks / 2))
        return Verdict(False, 0.0, _no_baseline, known_on)
    recent, baseline = [0, 0], [0, 0]
    squares = 0
    in_windows = False
    for week, (visits, amount) in state.weekly.items():
        index = int(week)
        in_windows = in_windows or (index >= recent_from - rule.baseline_weeks and visits > 0)
        if recent_from <= index < current:
            recent[0] += visits
            recent[1] += amount
        elif baseline_from <= index < recent_from:
            baseline[0] += visits
            baseline[1] += amount
            squares += visits * visits
    # The answer can change each Monday while a week with visits is inside the windows; once
    # they have slid past the last visit, only a new visit can change it.
    changes_on = week_start(current + 1) if in_windows else None
    return _Totals(recent[0], recent[1], baseline[0], baseline[1], known_weeks, squares, changes_on)


def _frequency_drop(rule: FrequencyDrop, totals: _Totals | Verdict) -> Verdict:
    if isinstance(totals, Verdict):
        return totals
    recent, baseline, baseline_weeks = totals.recent, totals.baseline, totals.baseline_weeks
    recent_rate = recent / rule.recent_weeks
    baseline_rate = baseline / baseline_weeks
    ratio = recent_rate / baseline_rate if baseline_rate > 0 else 1.0
    dispersion = _dispersion(baseline, totals.baseline_squares, baseline_weeks)
    p_value = _fall_p_value(recent, rule.recent_weeks, baseline, baseline_weeks, dispersion)
    # Complete silence is the inactivity rule's to report, not a drop in frequency.
    firing = recent > 0 and ratio <= rule.max_ratio and p_value <= rule.max_p_value

    def explain() -> dict[str, Any]:
        return {
            "recent_weeks": rule.recent_weeks,
            "baseline_weeks": baseline_weeks,
            "recent_visits": recent,
            "baseline_visits": baseline,
            "recent_visits_per_week": round(recent_rate, 3),
            "baseline_visits_per_week": round(baseline_rate, 3),
            "ratio": round(ratio, 3),
            "dispersion": round(dispersion, 3),
            "p_value": round(p_value, 6),
        }

    return Verdict(firing, max(0.0, 1.0 - ratio), explain, totals.changes_on)


# Regular customers vary less from week to week than a Poisson process would; their
# dispersion is floored here so that a handful of weeks cannot make a test overconfident.
MIN_DISPERSION = 0.25


def _dispersion(visits: int, squares: int, weeks: int) -> float:
    """Variance over mean of the visits per baseline week (1 for a Poisson process)."""
    if visits == 0 or weeks < 2:
        return 1.0
    mean = visits / weeks
    variance = (squares - visits * mean) / (weeks - 1)
    return max(variance / mean, MIN_DISPERSION)


def _fall_p_value(
    recent: int, recent_weeks: int, baseline: int, baseline_weeks: int, dispersion: float
) -> float:
    """One-sided p-value of "the visit rate did not fall": the conditional test of two
    Poisson rates (given all n visits, the recent window's share is Binomial(n, s) if the rate
    is unchanged), in its normal form with continuity correction, with the variance scaled
    by the customer's own dispersion (quasi-Poisson). A customer who visits rarely has too
    few visits for any fall to be significant, so cannot raise a false alarm."""
    n = recent + baseline
    if baseline == 0 or n == 0:
        return 1.0
    share = recent_weeks / (recent_weeks + baseline_weeks)
    spread = math.sqrt(dispersion * n * share * (1 - share))
    z = (recent + 0.5 - n * share) / spread
    return 0.5 * math.erfc(-z / math.sqrt(2))  # the normal CDF (scipy's costs 50 us a call)


def _spend_drop(rule: SpendDrop, totals: _Totals | Verdict) -> Verdict:
    if isinstance(totals, Verdict):
        return totals
    recent, baseline, baseline_weeks = totals.recent, totals.baseline, totals.baseline_weeks
    recent_per_visit = totals.recent_amount / Money.SCALE / recent if recent else 0.0
    baseline_per_visit = totals.baseline_amount / Money.SCALE / baseline if baseline else 0.0
    enough = recent >= rule.min_recent_visits and baseline >= rule.min_baseline_visits
    ratio = recent_per_visit / baseline_per_visit if baseline_per_visit > 0 else 1.0
    firing = enough and ratio <= rule.max_ratio

    def explain() -> dict[str, Any]:
        return {
            "recent_weeks": rule.recent_weeks,
            "baseline_weeks": baseline_weeks,
            "recent_visits": recent,
            "baseline_visits": baseline,
            "recent_spend_per_visit": round(recent_per_visit, 2),
            "baseline_spend_per_visit": round(baseline_per_visit, 2),
            "ratio": round(ratio, 3),
        }

    return Verdict(firing, max(0.0, min(1.0, 1.0 - ratio)), explain, totals.changes_on)


def _category_lapse(state: CustomerState, rule: CategoryLapse, as_of: date) -> Verdict:
    lapsed: list[dict[str, Any]] = []
    habitual = 0
    changes: list[date | None] = []
    for category, tally in sorted(state.categories.items()):
        if len(tally) < 3 or int(tally[0]) < rule.min_purchases:
            continue  # not a habit (or a tally from before first days were kept)
        count, last, first = (
            int(tally[0]),
            date.fromisoformat(str(tally[1])),
            date.fromisoformat(str(tally[2])),
        )
        gap = (last - first).days / (count - 1)
        if gap <= 0:
            continue
        habitual += 1
        limit = max(rule.min_days, math.ceil(rule.gap_multiple * gap))
        silent = (as_of - last).days
        if silent < limit:
            changes.append(last + timedelta(days=limit))
            continue
        since = sum(
            visits for week, (visits, _) in state.weekly.items() if int(week) > week_index(last)
        )
        if since >= rule.min_visits_since:
            lapsed.append(
                {
                    "category": category,
                    "purchases": count,
                    "last_bought_on": last.isoformat(),
                    "mean_gap_days": round(gap, 1),
                    "days_since": silent,
                    "visits_since": since,
                }
            )
    score = len(lapsed) / habitual if habitual else 0.0
    return Verdict(
        bool(lapsed),
        score,
        lambda: {"lapsed": lapsed, "habitual_categories": habitual},
        _earliest(changes, as_of),
    )


def _earliest(days: list[date | None], as_of: date) -> date | None:
    future = [day for day in days if day is not None]
    return max(min(future), as_of + timedelta(days=1)) if future else None


def _next_check(
    customer_id: str, days: list[date | None], now: datetime, has_open_alerts: bool
) -> datetime | None:
    """The earliest day something can change, spread over that day's hours by customer so
    that a week's boundary does not make every customer due in the same second."""
    candidates = [day for day in days if day is not None]
    moments = []
    if candidates:
        earliest = min(candidates)
        moments.append(
            datetime.combine(earliest, time(), UTC) + timedelta(hours=_spread(customer_id))
        )
    if has_open_alerts:
        moments.append(now + REFRESH_OPEN_ALERTS)
    if not moments:
        return None
    return max(min(moments), now + timedelta(minutes=1))


def _spread(customer_id: str) -> float:
    return (zlib.crc32(customer_id.encode()) % 1440) / 60
