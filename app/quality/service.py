"""Model quality you can see: the defection score and the rules judged against what
customers did next.

**The score, week by week.** For each snapshot Monday d whose horizon has passed
(d + H <= today, H the policy's `horizon_days`), the customers loyal at d by the current
policy (at least `loyalty.min_visits` visit days before d, the first at least
`loyalty.min_tenure_days` before d, the last within `loyalty.lost_after_days` of d's eve,
not in `exclusions.customers`) are scored as the service scored them then: Pareto/NBD
P(no purchase in [d, d + H)) from (x repeat visit days, t_x, T) as of the Sunday before d,
with the fit in force at d (the latest whose `fitted_at` is at or before d's midnight UTC;
before the first fit, the earliest fit; without any, the built-in prior: each week says
which). The truth is whether the customer had no visit day in [d, d + H). Per week: the
customers, the observed no-purchase rate, the mean predicted, the calibration error (their
distance), the Brier score (mean squared error of the probability), the ROC AUC (the chance
a customer who stayed away scored above one who came back, ties counting half: the
Mann-Whitney statistic), and the AUCs of two baselines scored on the same customers:
recency (days from the last visit to d) and relative recency (the same divided by the
customer's own mean gap between visit days). Over every week of the span: calibration by
tenths of the predicted probability, and the pooled Brier score and AUCs.

**The rules.** An alert opened at moment o is judged once o + H has passed, on the
customer's purchases in the H days before o and the H days from o (by `occurred_at`; a
visit is a day with a purchase, refunds are no visit):

- `inactivity` is right when there was no visit after o;
- `frequency_drop` when the visit days after are fewer than `max_ratio` times those before;
- `spend_drop` when there was no visit after, or the net spend per visit day after
  (purchases less refunds) is below `max_ratio` times that before;
- `category_lapse` when none of the lapsed categories its evidence names was bought after.

`max_ratio` is the current policy's. The evidence is the alert's latest (it is refreshed
while the alert is open).

**Degradation** is judged on the latest matured week alone, once it has at least
`model_quality.min_customers` loyal customers: the score is degraded when its AUC is below
recency's (it ranks worse than a spreadsheet would), or when its mean predicted P(no
purchase) is further than `model_quality.max_calibration_error` from the observed rate.
"""

from __future__ import annotations

import bisect
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import numpy as np
from scipy.stats import rankdata
from sqlalchemy import Connection

from app.customers.state import week_index, week_start
from app.kit.db import TransactionRunner
from app.kit.metrics import Metrics
from app.kit.periodic import Job
from app.kit.settings import Settings
from app.policy import service as policies
from app.policy.schemas import RULES, ModelQuality, PolicyBody
from app.quality import repository
from app.quality.repository import EPOCH, OpenedAlert, Purchase, StoredFit, VisitDays
from app.scoring import pareto
from app.scoring.btyd import FloatArray
from app.scoring.service import PRIOR
from app.webhooks import outbox

logger = logging.getLogger("radar.quality")

ModelSource = Literal["fit_in_force", "earliest_fit", "prior"]
DEFAULT_WEEKS = 26
# Customers' visit days share one sorted key (customer index * STRIDE + day): 2^23 days
# from 1970 reach past 9000-01-01, the latest day the service takes.
_STRIDE = 1 << 23
_DIGITS = 4


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), _DIGITS)


def _instant(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


# ---- the score --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeekRow:
    week_start: date  # the snapshot Monday d
    horizon_end: date  # d + H: the truth is no visit day in [d, d + H)
    customers: int
    observed_no_purchase_rate: float | None
    mean_predicted: float | None
    calibration_error: float | None  # |mean predicted - observed|
    brier: float | None
    auc: float | None
    recency_auc: float | None
    relative_recency_auc: float | None
    model_source: ModelSource
    model_fit_id: int | None


@dataclass(frozen=True, slots=True)
class CalibrationRow:
    lower: float  # the predicted probabilities in [lower, upper) (the last tenth: to 1)
    upper: float
    customers: int
    mean_predicted: float | None
    observed_rate: float | None


@dataclass(frozen=True, slots=True)
class Pooled:
    """Every (week, customer) of the span together."""

    observations: int
    observed_no_purchase_rate: float | None
    mean_predicted: float | None
    brier: float | None
    auc: float | None
    recency_auc: float | None
    relative_recency_auc: float | None


@dataclass(slots=True)
class _Snapshot:
    """The loyal customers at one snapshot Monday, as arrays."""

    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    recency: FloatArray
    relative_recency: FloatArray
    stayed_away: np.ndarray[Any, np.dtype[np.bool_]]
    predicted: FloatArray = field(default_factory=lambda: np.empty(0))


def matured_mondays(start: date, end: date, horizon_days: int, today: date) -> list[date]:
    """The Mondays in [start, end) whose horizon has passed by today."""
    monday = week_start(week_index(start))
    if monday < start:
        monday += timedelta(weeks=1)
    found = []
    while monday < end and monday + timedelta(days=horizon_days) <= today:
        found.append(monday)
        monday += timedelta(weeks=1)
    return found


def latest_matured_monday(horizon_days: int, today: date) -> date:
    return week_start(week_index(today - timedelta(days=horizon_days)))


def default_span(horizon_days: int, today: date) -> tuple[date, date]:
    """The last 26 weeks whose horizon has passed: [first Monday, day after the last week)."""
    end = latest_matured_monday(horizon_days, today) + timedelta(weeks=1)
    return end - timedelta(weeks=DEFAULT_WEEKS), end


class _Population:
    """Every customer's visit days, indexed once for all the snapshots."""

    def __init__(self, visits: VisitDays, excluded: Iterable[str]) -> None:
        count = len(visits.customers)
        owners = np.repeat(np.arange(count, dtype=np.int64), visits.counts)
        self.keys = owners * _STRIDE + visits.days
        self.base = np.arange(count, dtype=np.int64) * _STRIDE
        self.starts = visits.starts[:-1]
        self.days = visits.days
        self.first = visits.days[self.starts] if count else np.empty(0, dtype=np.int64)
        skip = set(excluded)
        self.included = np.array([c not in skip for c in visits.customers], dtype=bool)

    def snapshot(self, monday: date, policy: PolicyBody) -> _Snapshot:
        day = monday.toordinal() - EPOCH
        horizon, loyalty = policy.horizon_days, policy.loyalty
        position = np.searchsorted(self.keys, self.base + day)  # the first visit on d or later
        before = position - self.starts
        last = self.days[np.maximum(position - 1, 0)] if self.days.size else self.first
        loyal = (before >= loyalty.min_visits) & (self.first + loyalty.min_tenure_days <= day)
        loyal &= self.included
        if loyalty.lost_after_days is not None:  # silent longer than this by d's eve: lost
            loyal &= (day - 1 - last) <= loyalty.lost_after_days
        chosen = np.flatnonzero(loyal)
        later = np.searchsorted(self.keys, self.base[chosen] + day + horizon)
        first, last, before = self.first[chosen], last[chosen], before[chosen]
        recency = (day - last).astype(np.float64)
        # A customer's own mean gap; one visit day has none, and their age stands in for it.
        gap = np.where(before >= 2, (last - first) / np.maximum(before - 1, 1), day - first)
        return _Snapshot(
            x=(before - 1).astype(np.float64),
            t_x=(last - first).astype(np.float64),
            T=(day - 1 - first).astype(np.float64),
            recency=recency,
            relative_recency=recency / np.maximum(gap, 1),
            stayed_away=later == position[chosen],
        )


def fit_in_force(fits: Sequence[StoredFit], monday: date) -> tuple[StoredFit | None, ModelSource]:
    """The fit that scored customers on `monday`; before the first fit, the earliest."""
    if not fits:
        return None, "prior"
    index = bisect.bisect_right([f.fitted_at for f in fits], _instant(monday))
    return (fits[index - 1], "fit_in_force") if index else (fits[0], "earliest_fit")


def auc(scores: FloatArray, positives: np.ndarray[Any, np.dtype[np.bool_]]) -> float | None:
    """ROC AUC as the Mann-Whitney statistic, from average ranks (a tie counts half)."""
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _predict(snapshots: Sequence[_Snapshot], fit: StoredFit | None, horizon: int) -> None:
    """Score every snapshot of one fit in one vectorised call."""
    if not snapshots:
        return
    x = np.concatenate([s.x for s in snapshots])
    if not x.size:
        for snapshot in snapshots:
            snapshot.predicted = np.empty(0)
        return
    t_x = np.concatenate([s.t_x for s in snapshots])
    T = np.concatenate([s.T for s in snapshots])
    params = PRIOR if fit is None else fit.params
    # Absurd parameters (a fit gone wrong) can overflow: an undefined score is taken as a
    # coin toss, and the report shows how poorly that does.
    with np.errstate(all="ignore"):
        predicted = pareto.p_no_purchase_within(params, x, t_x, T, horizon)
    predicted = np.clip(np.nan_to_num(predicted, nan=0.5), 0.0, 1.0)
    offsets = np.cumsum([0] + [s.x.size for s in snapshots])
    for snapshot, begin, finish in zip(snapshots, offsets[:-1], offsets[1:], strict=True):
        snapshot.predicted = predicted[begin:finish]


def _week_row(
    monday: date, horizon: int, s: _Snapshot, fit: StoredFit | None, source: ModelSource
) -> WeekRow:
    y = s.stayed_away
    observed = float(y.mean()) if y.size else None
    predicted = float(s.predicted.mean()) if y.size else None
    error = None if observed is None or predicted is None else abs(predicted - observed)
    brier = float(np.mean((s.predicted - y) ** 2)) if y.size else None
    return WeekRow(
        week_start=monday,
        horizon_end=monday + timedelta(days=horizon),
        customers=int(y.size),
        observed_no_purchase_rate=_rounded(observed),
        mean_predicted=_rounded(predicted),
        calibration_error=_rounded(error),
        brier=_rounded(brier),
        auc=_rounded(auc(s.predicted, y)),
        recency_auc=_rounded(auc(s.recency, y)),
        relative_recency_auc=_rounded(auc(s.relative_recency, y)),
        model_source=source,
        model_fit_id=None if fit is None else fit.id,
    )


@dataclass(frozen=True, slots=True)
class ScoreQuality:
    weeks: list[WeekRow]
    calibration: list[CalibrationRow]
    pooled: Pooled


def score_quality(
    visits: VisitDays,
    fits: Sequence[StoredFit],
    policy: PolicyBody,
    mondays: Sequence[date],
) -> ScoreQuality:
    population = _Population(visits, policy.exclusions.customers)
    snapshots = [population.snapshot(monday, policy) for monday in mondays]
    chosen = [fit_in_force(fits, monday) for monday in mondays]
    by_fit: dict[int | None, list[_Snapshot]] = defaultdict(list)
    for snapshot, (fit, _) in zip(snapshots, chosen, strict=True):
        by_fit[None if fit is None else fit.id].append(snapshot)
    known = {fit.id: fit for fit in fits}
    for fit_id, group in by_fit.items():
        _predict(group, None if fit_id is None else known[fit_id], policy.horizon_days)
    weeks = [
        _week_row(monday, policy.horizon_days, snapshot, fit, source)
        for monday, snapshot, (fit, source) in zip(mondays, snapshots, chosen, strict=True)
    ]
    return ScoreQuality(weeks, *_pooled(snapshots))


def _pooled(snapshots: Sequence[_Snapshot]) -> tuple[list[CalibrationRow], Pooled]:
    def joined(name: str) -> FloatArray:
        parts = [getattr(s, name) for s in snapshots]
        return np.concatenate(parts) if parts else np.empty(0)

    p, y = joined("predicted"), joined("stayed_away").astype(bool)
    tenth = np.minimum((p * 10).astype(np.int64), 9)
    calibration = []
    for k in range(10):
        inside = tenth == k
        count = int(inside.sum())
        calibration.append(
            CalibrationRow(
                lower=k / 10,
                upper=(k + 1) / 10,
                customers=count,
                mean_predicted=_rounded(float(p[inside].mean())) if count else None,
                observed_rate=_rounded(float(y[inside].mean())) if count else None,
            )
        )
    pooled = Pooled(
        observations=int(y.size),
        observed_no_purchase_rate=_rounded(float(y.mean())) if y.size else None,
        mean_predicted=_rounded(float(p.mean())) if y.size else None,
        brier=_rounded(float(np.mean((p - y) ** 2))) if y.size else None,
        auc=_rounded(auc(p, y)),
        recency_auc=_rounded(auc(joined("recency"), y)),
        relative_recency_auc=_rounded(auc(joined("relative_recency"), y)),
    )
    return calibration, pooled


# ---- the rules --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleRow:
    week_start: date | None  # the Monday of the week the alerts opened in (None: the span)
    rule: str
    judged: int  # alerts whose window (H days from opening) has passed
    right: int
    precision: float | None
    pending: int  # opened in the week, window not passed yet


@dataclass(slots=True)
class _Window:
    visit_days: set[date] = field(default_factory=set)
    net_spend: float = 0.0
    categories: set[str] = field(default_factory=set)

    def add(self, purchase: Purchase) -> None:
        if purchase.refund:
            self.net_spend -= purchase.amount
            return
        self.visit_days.add(purchase.occurred_on)
        self.net_spend += purchase.amount
        self.categories |= purchase.categories

    @property
    def spend_per_visit(self) -> float:
        return self.net_spend / len(self.visit_days) if self.visit_days else 0.0


def alert_was_right(
    alert: OpenedAlert, purchases: Iterable[Purchase], horizon: timedelta, policy: PolicyBody
) -> bool | None:
    """Whether the customer really stayed away or changed in the H days from the alert
    (None: a rule this report cannot judge, or a lapse alert that names no category)."""
    before, after = _Window(), _Window()
    for purchase in purchases:
        if alert.opened_at - horizon <= purchase.occurred_at < alert.opened_at:
            before.add(purchase)
        elif alert.opened_at <= purchase.occurred_at < alert.opened_at + horizon:
            after.add(purchase)
    rules = policy.rules
    if alert.rule == "inactivity":
        return not after.visit_days
    if alert.rule == "frequency_drop":
        return len(after.visit_days) < rules.frequency_drop.max_ratio * len(before.visit_days)
    if alert.rule == "spend_drop":
        if not after.visit_days:
            return True
        limit = rules.spend_drop.max_ratio * before.spend_per_visit
        return bool(before.visit_days) and after.spend_per_visit < limit
    if alert.rule == "category_lapse":
        lapsed = {str(e.get("category")) for e in alert.evidence.get("lapsed") or ()}
        return not (lapsed & after.categories) if lapsed else None
    return None


def rule_precision(
    alerts: Sequence[OpenedAlert],
    purchases: Sequence[Purchase],
    policy: PolicyBody,
    now: datetime,
) -> tuple[list[RuleRow], list[RuleRow]]:
    """Per week and rule, and per rule over the span: judged, right, precision, pending."""
    horizon = timedelta(days=policy.horizon_days)
    by_customer: dict[str, list[Purchase]] = defaultdict(list)
    for purchase in purchases:
        by_customer[purchase.customer_id].append(purchase)
    tally: dict[tuple[date | None, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for alert in alerts:
        monday = week_start(week_index(alert.opened_at.astimezone(UTC).date()))
        if alert.opened_at + horizon > now:
            for key in ((monday, alert.rule), (None, alert.rule)):
                tally[key][2] += 1
            continue
        verdict = alert_was_right(alert, by_customer[alert.customer_id], horizon, policy)
        if verdict is None:
            continue
        for key in ((monday, alert.rule), (None, alert.rule)):
            tally[key][0] += 1
            tally[key][1] += int(verdict)
    order: dict[str, int] = {rule: k for k, rule in enumerate(RULES)}

    def rows(weekly: bool) -> list[RuleRow]:
        keys = [key for key in tally if (key[0] is not None) == weekly]
        keys.sort(key=lambda k: (k[0] or date.min, order.get(k[1], len(order)), k[1]))
        return [
            RuleRow(
                week,
                rule,
                tally[(week, rule)][0],
                tally[(week, rule)][1],
                _rounded(tally[(week, rule)][1] / tally[(week, rule)][0])
                if tally[(week, rule)][0]
                else None,
                tally[(week, rule)][2],
            )
            for week, rule in keys
        ]

    return rows(True), rows(False)


def judged_alerts(
    connection: Connection, start: date, end: date, horizon_days: int
) -> tuple[list[OpenedAlert], list[Purchase]]:
    """The alerts opened in [start, end), and their customers' purchases around them."""
    alerts = repository.alerts_opened(connection, _instant(start), _instant(end))
    if not alerts:
        return [], []
    horizon = timedelta(days=horizon_days)
    purchases = repository.purchases(
        connection,
        [alert.customer_id for alert in alerts],
        min(alert.opened_at for alert in alerts) - horizon,
        max(alert.opened_at for alert in alerts) + horizon,
    )
    return alerts, purchases


# ---- degradation ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Degradation:
    judged: bool  # False: no matured week, too few customers, or one outcome only
    degraded: bool
    week_start: date | None
    reasons: list[str]
    customers: int
    min_customers: int
    auc: float | None
    recency_auc: float | None
    calibration_error: float | None
    max_calibration_error: float


def judge(latest: WeekRow | None, bounds: ModelQuality) -> Degradation:
    """Degraded when, on the latest matured week with enough customers, the score ranks
    worse than recency or its mean is further than the bound from what happened."""
    if latest is None:
        return Degradation(
            False, False, None, [], 0, bounds.min_customers, None, None, None,
            bounds.max_calibration_error,
        )  # fmt: skip
    reasons = _reasons(latest, bounds)
    judged = (
        latest.customers >= bounds.min_customers
        and latest.auc is not None
        and latest.recency_auc is not None
    )
    return Degradation(
        judged=judged,
        degraded=judged and bool(reasons),
        week_start=latest.week_start,
        reasons=reasons if judged else [],
        customers=latest.customers,
        min_customers=bounds.min_customers,
        auc=latest.auc,
        recency_auc=latest.recency_auc,
        calibration_error=latest.calibration_error,
        max_calibration_error=bounds.max_calibration_error,
    )


def _reasons(week: WeekRow, bounds: ModelQuality) -> list[str]:
    reasons = []
    if week.auc is not None and week.recency_auc is not None and week.auc < week.recency_auc:
        reasons.append(
            f"it ranks customers worse than days since their last visit: AUC {week.auc:.3f} "
            f"against recency's {week.recency_auc:.3f}"
        )
    error = week.calibration_error or 0.0
    if error > bounds.max_calibration_error:
        reasons.append(
            f"it predicted {week.mean_predicted or 0:.1%} would not buy within the horizon, "
            f"and {week.observed_no_purchase_rate or 0:.1%} did not (off by {error:.3f}, "
            f"bound {bounds.max_calibration_error:.3f})"
        )
    return reasons


SUGGESTION = (
    "Refit the population model on the current history (`radar refit`, or wait for the "
    "next background refit) and check this report again; if the score stays degraded, "
    "review the policy (`horizon_days`, `loyalty`) or, when the business changed, the "
    "`model_quality` bounds."
)


def degraded_message(verdict: Degradation, latest: WeekRow, horizon_days: int) -> dict[str, Any]:
    """The body of `model.degraded` (webhook and change feed)."""
    end = latest.week_start + timedelta(weeks=1)
    return {
        "week_start": latest.week_start.isoformat(),
        "horizon_end": latest.horizon_end.isoformat(),
        "horizon_days": horizon_days,
        "summary": "The defection score did worse than its bounds for customers loyal on "
        f"{latest.week_start.isoformat()}: " + "; ".join(verdict.reasons) + ".",
        "reasons": verdict.reasons,
        "customers": latest.customers,
        "auc": latest.auc,
        "recency_auc": latest.recency_auc,
        "relative_recency_auc": latest.relative_recency_auc,
        "mean_predicted": latest.mean_predicted,
        "observed_no_purchase_rate": latest.observed_no_purchase_rate,
        "calibration_error": latest.calibration_error,
        "max_calibration_error": verdict.max_calibration_error,
        "model": {"source": latest.model_source, "fit_id": latest.model_fit_id},
        "suggestion": SUGGESTION,
        "links": {
            "report": f"/v1/reports/model-quality?from={latest.week_start.isoformat()}"
            f"&to={end.isoformat()}"
        },
    }


def latest_week(connection: Connection, today: date) -> tuple[PolicyBody, WeekRow | None]:
    """The current policy and the latest matured week's row (None before any history)."""
    policy = policies.current(connection).body
    monday = latest_matured_monday(policy.horizon_days, today)
    visits = repository.visit_days(connection)
    if not visits.customers:
        return policy, None
    quality = score_quality(visits, repository.model_fits(connection), policy, [monday])
    return policy, quality.weeks[0]


def announce(
    connection: Connection, verdict: Degradation, message: dict[str, Any], now: datetime
) -> bool:
    """Announce a degraded week once: a change-feed event and `model.degraded` to the
    endpoints that subscribe. False when the week was announced before."""
    assert verdict.week_start is not None
    if not repository.claim_announcement(connection, verdict.week_start, message, now):
        return False
    repository.record_feed_event(connection, "model.degraded", message, now)
    outbox.enqueue_model_degraded(connection, message, now)
    return True


async def check(
    transactions: TransactionRunner, metrics: Metrics, clock: Callable[[], datetime]
) -> Degradation:
    """The periodic check: judge the latest matured week, show it in the gauge, and
    announce it when degraded and not announced yet."""
    now = clock()
    policy, latest = await transactions.read(lambda c: latest_week(c, now.date()))
    verdict = judge(latest, policy.model_quality)
    metrics.model_degraded.set(1 if verdict.degraded else 0)
    if verdict.degraded and latest is not None:
        message = degraded_message(verdict, latest, policy.horizon_days)
        if await transactions.run(lambda c: announce(c, verdict, message, now)):
            logger.warning("model degraded: %s", message["summary"])
    return verdict


def periodic_jobs(
    settings: Settings,
    transactions: TransactionRunner,
    metrics: Metrics,
    clock: Callable[[], datetime],
) -> list[Job]:
    """Model quality's loop: the latest matured week checked, a degradation announced."""
    return [
        Job(
            settings.model_quality_interval,
            "check-model-quality",
            lambda: check(transactions, metrics, clock),
        )
    ]


# ---- the report -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    horizon_days: int
    weeks: list[WeekRow]
    calibration: list[CalibrationRow]
    pooled: Pooled
    rules_by_week: list[RuleRow]
    rules: list[RuleRow]
    degradation: Degradation


def report(connection: Connection, start: date, end: date, now: datetime) -> Report:
    """The score's weeks in [start, end) whose horizon has passed, the alerts opened in it,
    and the degradation verdict on the span's latest week."""
    policy = policies.current(connection).body
    mondays = matured_mondays(start, end, policy.horizon_days, now.date())
    visits = repository.visit_days(connection)
    quality = score_quality(visits, repository.model_fits(connection), policy, mondays)
    alerts, purchases = judged_alerts(connection, start, end, policy.horizon_days)
    by_week, overall = rule_precision(alerts, purchases, policy, now)
    latest = quality.weeks[-1] if quality.weeks else None
    return Report(
        policy.horizon_days,
        quality.weeks,
        quality.calibration,
        quality.pooled,
        by_week,
        overall,
        judge(latest, policy.model_quality),
    )
