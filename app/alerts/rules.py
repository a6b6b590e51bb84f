"""The policy's rules applied to one customer's pattern and scores: pure functions, no I/O.

Each rule is a statistical test of "this customer's own pattern has changed" (`stats.py`):
it fires when what is seen now would happen by chance, to a customer whose pattern did not
change, with at most the rule's share of the policy's false-alarm budget. It answers with
the numbers behind the answer (the evidence an alert carries, in plain words too), the
share of the customer's value the change puts at risk, and the day its answer could change
if no new event comes: the evaluation stores the earliest such day as the customer's next
check, so the sweeper looks at a customer exactly when something can have happened, and at
nobody else.

One customer, one call: when the inactivity rule fires, the silence explains every other
change, so the other rules are muted for that customer (their open alerts resolve as
`explained_by_inactivity`).
"""

from __future__ import annotations

import bisect
import itertools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from app.alerts import stats
from app.customers.state import WEEKS_KEPT, CustomerState, week_index, week_start
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

# An open alert's numbers are refreshed at least this often, even if nothing else is due.
REFRESH_OPEN_ALERTS = timedelta(days=7)
# The recent windows, in complete weeks, that the frequency and spend tests compare with
# what came before: from a month to half a year. Trying several lets a change be found soon
# after it happens and also months later; the tests pay for the six tries (Bonferroni),
# which costs less than it gains: on the synthetic chain six windows caught 0.47 of the
# halvers where (4, 8, 13, 26) caught 0.41 and eight windows 0.45 (bench/detection.py).
RECENT_WEEKS = (4, 8, 13, 17, 21, 26)
# The frequency test tries every window from 4 to 26 weeks: its correction accounts for how
# much the windows overlap (stats.scan_p_value), so trying them all costs little more than
# trying six, and the window can match when the change happened.
FREQUENCY_WEEKS = tuple(range(4, 27))
# The least history before a recent window for a test against it.
MIN_EARLIER_DAYS = 56
MIN_EARLIER_VISITS = 3
MIN_RECENT_VISITS = 2
# Spend per visit on the log scale: a customer's own spread is estimated from their weeks,
# pulled towards this with the weight of a few weeks (a retail basket's typical spread).
SPEND_SIGMA_PRIOR = 0.5
SPEND_PRIOR_WEEKS = 3.0
MUTED = "explained_by_inactivity"
# How many lapsed categories an alert's evidence lists, and names in its summary.
LISTED_LAPSES = 20
SUMMARY_LAPSES = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    firing: bool
    score: float  # the size of the change: 0 (none) to 1 (all gone)
    # The numbers behind the answer, built only when an alert needs them: most evaluations
    # (every event, every sweep) fire nothing, and formatting evidence was half their cost.
    explain: Callable[[], dict[str, Any]]
    changes_on: date | None = None  # when the answer can change without new events
    stake: float = 1.0  # the share of the customer's value this change puts at risk
    p_value: float = 1.0  # chance of a change at least this clear, if nothing changed
    muted_by: Rule | None = None  # fires, but another rule of the customer explains it

    @property
    def evidence(self) -> dict[str, Any]:
        evidence = self.explain()
        if self.muted_by is not None:
            evidence["muted_by"] = self.muted_by
        return evidence

    def muted(self, by: Rule) -> Verdict:
        return Verdict(
            False, self.score, self.explain, self.changes_on, self.stake, self.p_value, by
        )


@dataclass(slots=True)
class Evaluation:
    """What the policy says about one customer at one moment."""

    eligible: bool  # loyal, not excluded, worth enough, not lost long ago: may raise alerts
    excluded: bool
    severity: Severity  # of the customer's whole value
    verdicts: dict[Rule, Verdict] = field(default_factory=dict)  # enabled rules only
    next_check_at: datetime | None = None
    lost: bool = False  # silent past the policy's "already lost" age


def evaluate(
    state: CustomerState,
    scores: Scores | None,
    policy: PolicyBody,
    now: datetime,
    *,
    has_open_alerts: bool,
) -> Evaluation:
    """Apply every enabled rule, then mute what inactivity explains."""
    as_of = now.date()
    excluded = _excluded(state, policy)
    value = scores.value_at_risk if scores else 0.0
    evaluation = Evaluation(eligible=False, excluded=excluded, severity=severity_of(value, policy))
    if scores is None or state.first_visit_on is None or state.last_visit_on is None:
        return evaluation
    rules = policy.rules
    alpha = rules.significance(policy.false_alarms)
    weeks = _Weeks.of(state, as_of)
    verdicts = evaluation.verdicts
    if rules.inactivity.enabled:
        verdicts["inactivity"] = _inactivity(state, weeks, rules.inactivity, alpha["inactivity"])
    if rules.frequency_drop.enabled:
        frequency = rules.frequency_drop
        verdicts["frequency_drop"] = _frequency_drop(
            state, weeks, frequency, alpha["frequency_drop"]
        )
    if rules.spend_drop.enabled:
        verdicts["spend_drop"] = _spend_drop(weeks, rules.spend_drop, alpha["spend_drop"])
    if rules.category_lapse.enabled:
        verdicts["category_lapse"] = _category_lapse(
            state, weeks, rules.category_lapse, alpha["category_lapse"]
        )
    silence = verdicts.get("inactivity")
    if silence is not None and silence.firing:
        for rule, verdict in verdicts.items():
            if rule != "inactivity" and verdict.firing:
                verdicts[rule] = verdict.muted("inactivity")
    lost_after = policy.loyalty.lost_after_days
    evaluation.lost = lost_after is not None and (as_of - state.last_visit_on).days > lost_after
    loyal, loyal_from = _loyalty(state, policy, as_of)
    evaluation.eligible = (
        loyal and not excluded and not evaluation.lost and value >= policy.min_value_at_risk
    )
    checks: list[date | None] = []
    if ((loyal or loyal_from is not None) and not evaluation.lost) or has_open_alerts:
        # Customers short of the loyalty visits cannot raise alerts until they visit again,
        # nor can those already lost: nothing to check for them in the meantime.
        checks.extend(verdict.changes_on for verdict in verdicts.values())
        checks.append(loyal_from)
        if lost_after is not None and not evaluation.lost:
            checks.append(state.last_visit_on + timedelta(days=lost_after + 1))
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


@dataclass(frozen=True, slots=True)
class _Weeks:
    """The customer's weekly visits and net spend as of a day, by week index."""

    current: int  # the week of as_of, not complete yet
    first: int  # the week of the first visit
    kept_from: int  # the oldest week whose numbers are kept (a year before the last visit)
    last: int  # the week of the last visit
    visits: dict[int, int]
    amounts: dict[int, int]
    as_of: date
    base: int  # the week of running[0]
    running: list[int]  # visits in the weeks before base + i, for every week from base

    @classmethod
    def of(cls, state: CustomerState, as_of: date) -> _Weeks:
        assert state.first_visit_on is not None
        assert state.last_visit_on is not None
        last = week_index(state.last_visit_on)
        first = week_index(state.first_visit_on)
        current = week_index(as_of)
        visits: dict[int, int] = {}
        amounts: dict[int, int] = {}
        for key, (count, amount) in state.weekly.items():
            visits[int(key)] = count
            amounts[int(key)] = amount
        kept_from = max(first, last - (WEEKS_KEPT - 1))
        base = min([kept_from, *visits])
        top = max([current, *visits]) + 1
        running = list(
            itertools.accumulate((visits.get(w, 0) for w in range(base, top)), initial=0)
        )
        return cls(current, first, kept_from, last, visits, amounts, as_of, base, running)

    def visits_between(self, start: int, end: int) -> int:
        """Visits in the kept weeks start <= week < end (a difference of running sums: the
        tests ask it for every window)."""
        top = len(self.running) - 1
        low = min(max(start - self.base, 0), top)
        high = min(max(end - self.base, 0), top)
        return self.running[high] - self.running[low] if high > low else 0


def _months(days: int) -> str:
    """A span in the words a caller would use: days, then weeks, then months."""
    if days < 21:
        return f"{days} days"
    if days < 120:
        return f"{days // 7} weeks"
    return f"{round(days / 30.44)} months"


def _inactivity(state: CustomerState, weeks: _Weeks, rule: Inactivity, alpha: float) -> Verdict:
    first, last = state.first_visit_on, state.last_visit_on
    assert first is not None
    assert last is not None
    silent = max((weeks.as_of - last).days, 0)
    gaps, span = state.visit_days - 1, (last - first).days
    if gaps < 1 or span < 1:
        return Verdict(False, 0.0, lambda: {"reason": "one visit day so far"})
    # Regularity from the gaps between the latest visits (the silence itself left out).
    regularity = stats.regularity_of(_gaps(state.recent_days))
    p_value = stats.silence_survival(gaps, span, silent, regularity)
    firing = silent >= rule.min_days and p_value <= alpha
    changes_on = None
    if not firing:
        needed = stats.first_silence_at(gaps, span, regularity, alpha)
        if needed is not None:
            changes_on = last + timedelta(days=max(needed, rule.min_days))
    gap = span / gaps

    def explain() -> dict[str, Any]:
        expected = silent / gap
        return {
            "summary": f"visited every {gap:.0f} days for {_months(span)}; no visit for "
            f"{silent} days, {expected:.0f} expected",
            "last_visit_on": last.isoformat(),
            "days_since_last_visit": silent,
            "mean_gap_days": round(gap, 1),
            "expected_visits_since": round(expected, 1),
            "regularity": regularity,
            "p_value": _rounded(p_value),
            "significance": _rounded(alpha),
        }

    return Verdict(firing, 1.0 - p_value, explain, changes_on, 1.0, p_value)


def _gaps(days: list[str]) -> list[int]:
    ordinals = [date.fromisoformat(day).toordinal() for day in days]
    return [later - earlier for earlier, later in itertools.pairwise(ordinals)]


def _rounded(p: float) -> float:
    return float(f"{p:.3g}")


def _frequency_drop(
    state: CustomerState, weeks: _Weeks, rule: FrequencyDrop, alpha: float
) -> Verdict:
    """The recent window where the fall is clearest, against everything before it since the
    first visit (the visits before the kept year come from the customer's totals)."""
    assert state.first_visit_on is not None
    in_current = weeks.visits.get(weeks.current, 0)
    this_monday = week_start(weeks.current).toordinal()
    first_day = state.first_visit_on.toordinal()
    windows: list[int] = []  # the windows tried: enough history before them
    slower: list[tuple[int, int, int, int, float]] = []  # ... and a fall large enough
    for recent_weeks in FREQUENCY_WEEKS:
        start = weeks.current - recent_weeks
        earlier_days = this_monday - 7 * recent_weeks - first_day
        if start < weeks.kept_from or earlier_days < MIN_EARLIER_DAYS:
            continue
        recent = weeks.visits_between(start, weeks.current)
        earlier = state.visit_days - 1 - recent - in_current  # the first visit left out
        if earlier < MIN_EARLIER_VISITS:
            continue
        windows.append(recent_weeks)
        ratio = (recent / (recent_weeks * 7)) / (earlier / earlier_days)
        # A window can speak for a slower rhythm only with two visits in it (a gap inside
        # it): a silence, or one visit after one, is the inactivity rule's to judge, so a
        # customer who comes back after a silence is not called again about it.
        if ratio <= rule.max_ratio and recent >= MIN_RECENT_VISITS:
            slower.append((recent_weeks, recent, earlier, earlier_days, ratio))
    if not windows:
        known_on = week_start(weeks.first + FREQUENCY_WEEKS[0] + MIN_EARLIER_DAYS // 7 + 1)
        return Verdict(False, 0.0, _no_baseline, max(known_on, weeks.as_of + timedelta(days=1)))
    if not slower:
        return Verdict(False, 0.0, _no_fall, _next_monday(weeks))
    # The deviates, with each window's dispersion from the customer's gaps before it (a
    # change inside the window must not make its own test weaker), from running sums.
    days = [date.fromisoformat(day).toordinal() for day in state.recent_days]
    gaps = [later - earlier for earlier, later in itertools.pairwise(days)]
    sums = list(itertools.accumulate(gaps, initial=0))
    squares = list(itertools.accumulate((gap * gap for gap in gaps), initial=0))
    tried = []
    for recent_weeks, recent, earlier, earlier_days, ratio in slower:
        count = max(bisect.bisect_left(days, this_monday - 7 * recent_weeks) - 1, 0)
        dispersion = max(
            stats.spread_of_sums(count, sums[count], squares[count]), stats.MIN_DISPERSION
        )
        z = stats.rate_fall_z(recent, recent_weeks * 7, earlier, earlier_days, dispersion)
        tried.append((z, recent_weeks, recent, earlier, earlier_days, ratio, dispersion))
    z, recent_weeks, recent, earlier, earlier_days, ratio, dispersion = min(tried)
    history_weeks = recent_weeks + earlier_days / 7  # the same for every window
    p_value = stats.scan_p_value(z, windows, history_weeks)
    firing = p_value <= alpha
    changes_on = _next_monday(weeks)

    def explain() -> dict[str, Any]:
        before_gap = earlier_days / earlier
        expected = earlier / earlier_days * recent_weeks * 7
        now = f"every {recent_weeks * 7 / recent:.0f} days" if recent else "not at all"
        return {
            "summary": f"visited every {before_gap:.0f} days over {_months(earlier_days)}; "
            f"{recent} visits in the last {recent_weeks} weeks, {expected:.0f} expected "
            f"({now})",
            "recent_weeks": recent_weeks,
            "recent_visits": recent,
            "expected_recent_visits": round(expected, 1),
            "earlier_days": earlier_days,
            "earlier_visits": earlier,
            "ratio": round(ratio, 3),
            "dispersion": round(dispersion, 3),
            "windows_tried": len(windows),
            "p_value": _rounded(p_value),
            "significance": _rounded(alpha),
        }

    stake = max(0.0, min(1.0, 1.0 - ratio))
    return Verdict(firing, stake, explain, changes_on, stake, p_value)


def _next_monday(weeks: _Weeks) -> date | None:
    """The windows slide every Monday; once the oldest has passed the last visit, only a new
    visit can change their answer."""
    if weeks.last >= weeks.current - RECENT_WEEKS[-1] - 1:
        return week_start(weeks.current + 1)
    return None


def _no_baseline() -> dict[str, Any]:
    return {"reason": "not enough history yet"}


def _no_fall() -> dict[str, Any]:
    return {"reason": "no window with two visits or more and a fall to the limit"}


def _spend_drop(weeks: _Weeks, rule: SpendDrop, alpha: float) -> Verdict:
    """Spend per visit on the log scale, week by week (a week's mean over its visits counts
    with the weight of its visits), recent window against the kept weeks before it."""
    points = [
        (week, visits, math.log(weeks.amounts[week] / visits))
        for week, visits in sorted(weeks.visits.items())
        if visits > 0 and weeks.amounts.get(week, 0) > 0 and week < weeks.current
    ]
    # Running sums of the weights, weighted logs and weighted squares, week by week: each
    # window is then a split of them (the tests ask for six).
    order = [week for week, _, _ in points]
    weight = list(itertools.accumulate((v for _, v, _ in points), initial=0))
    first = list(itertools.accumulate((v * y for _, v, y in points), initial=0.0))
    second = list(itertools.accumulate((v * y * y for _, v, y in points), initial=0.0))
    tried: list[tuple[float, int, int, float, int, float, float]] = []
    for recent_weeks in RECENT_WEEKS:
        split = bisect.bisect_left(order, weeks.current - recent_weeks)
        n_recent, n_earlier = weight[-1] - weight[split], weight[split]
        if n_recent < rule.min_recent_visits or n_earlier < rule.min_baseline_visits:
            continue
        if split < 2:
            continue
        mean_recent = (first[-1] - first[split]) / n_recent
        mean_earlier = first[split] / n_earlier
        squares = max(second[split] - n_earlier * mean_earlier**2, 0.0)
        df = split - 1 + SPEND_PRIOR_WEEKS
        sigma = math.sqrt((squares + SPEND_PRIOR_WEEKS * SPEND_SIGMA_PRIOR**2) / df)
        t = (mean_recent - mean_earlier) / (sigma * math.sqrt(1 / n_recent + 1 / n_earlier))
        p_value = stats.normal_cdf(stats.t_to_z(t, df))
        ratio = math.exp(mean_recent - mean_earlier)
        tried.append((p_value, recent_weeks, n_recent, ratio, n_earlier, mean_recent, sigma))
    if not tried:
        return Verdict(False, 0.0, _no_baseline, _next_monday(weeks))
    large = [entry for entry in tried if entry[3] <= rule.max_ratio] or tried
    p_min, recent_weeks, n_recent, ratio, n_earlier, mean_recent, sigma = min(large)
    p_value = min(p_min * len(tried), 1.0)
    firing = ratio <= rule.max_ratio and p_value <= alpha
    start = weeks.current - recent_weeks

    def explain() -> dict[str, Any]:
        before = _spend(weeks, weeks.kept_from, start)
        after = _spend(weeks, start, weeks.current)
        return {
            "summary": f"spend per visit fell from {before:.2f} to {after:.2f} over the "
            f"last {n_recent} visits ({recent_weeks} weeks)",
            "recent_weeks": recent_weeks,
            "recent_visits": n_recent,
            "earlier_visits": n_earlier,
            "recent_spend_per_visit": round(after, 2),
            "earlier_spend_per_visit": round(before, 2),
            "ratio": round(ratio, 3),
            "log_spread": round(sigma, 3),
            "windows_tried": len(tried),
            "p_value": _rounded(p_value),
            "significance": _rounded(alpha),
        }

    stake = max(0.0, min(1.0, 1.0 - ratio))
    return Verdict(firing, stake, explain, _next_monday(weeks), stake, p_value)


def _spend(weeks: _Weeks, start: int, end: int) -> float:
    visits = weeks.visits_between(start, end)
    amount = sum(a for week, a in weeks.amounts.items() if start <= week < end)
    return amount / Money.SCALE / visits if visits else 0.0


def _category_lapse(
    state: CustomerState, weeks: _Weeks, rule: CategoryLapse, alpha: float
) -> Verdict:
    """For each habit, the chance of the visits in a row without it since it was last
    bought, given the share of visits that included it; corrected for the habits tried.
    Visits are counted by week, so those in the week it was last bought are left out of the
    run and counted as visits without it: both err towards fewer alarms."""
    habits: list[tuple[str, int, date, date]] = []
    purchases_all = 0
    for category, tally in sorted(state.categories.items()):
        purchases_all += int(tally[0])
        if len(tally) < 3 or int(tally[0]) < rule.min_purchases:
            continue  # not a habit (or a tally from before first days were kept)
        habits.append(
            (
                category,
                int(tally[0]),
                date.fromisoformat(str(tally[1])),
                date.fromisoformat(str(tally[2])),
            )
        )
    lapsed: list[dict[str, Any]] = []
    changes: list[date | None] = []
    strongest = 1.0
    stake = 0.0
    for category, purchases, last, first in habits:
        last_week = week_index(last)
        run = weeks.visits_between(last_week + 1, weeks.current + 1)
        earlier = weeks.visits_between(weeks.kept_from, week_index(first))
        trials = state.visit_days - run - earlier
        p_value = min(stats.run_without_p_value(purchases - 1, trials - 1, run) * len(habits), 1.0)
        strongest = min(strongest, p_value)
        if p_value > alpha or run < rule.min_visits_since:
            continue  # only another visit can change this
        silent = (weeks.as_of - last).days
        if silent < rule.min_days:
            changes.append(last + timedelta(days=rule.min_days))
            continue
        share = purchases / purchases_all
        stake += share
        lapsed.append(
            {
                "category": category,
                # Purchases, not visit days: two tickets on one day count twice, so the
                # count can pass the visits; the words say what is counted.
                "summary": f"bought {category} {purchases} times in {trials} visits; none "
                f"in the last {run} visits ({silent} days)",
                "purchases": purchases,
                "visits": trials,
                "last_bought_on": last.isoformat(),
                "days_since": silent,
                "visits_since": run,
                "share_of_purchases": round(share, 3),
                "p_value": _rounded(p_value),
            }
        )
    lapsed.sort(key=lambda entry: (entry["p_value"], entry["category"]))

    def explain() -> dict[str, Any]:
        # A pattern tallies up to 500 categories: the evidence names the clearest lapses
        # only, so an alert stays a small row whatever the customer bought.
        summary = "; ".join(entry["summary"] for entry in lapsed[:SUMMARY_LAPSES])
        if len(lapsed) > SUMMARY_LAPSES:
            summary += f"; and {len(lapsed) - SUMMARY_LAPSES} more"
        return {
            "summary": summary,
            "lapsed": lapsed[:LISTED_LAPSES],
            "lapsed_categories": len(lapsed),
            "habitual_categories": len(habits),
            "p_value": _rounded(strongest),
            "significance": _rounded(alpha),
        }

    score = len(lapsed) / len(habits) if habits else 0.0
    return Verdict(
        bool(lapsed),
        score,
        explain,
        _earliest(changes, weeks.as_of),
        min(stake, 1.0),
        strongest,
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
