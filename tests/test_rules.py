"""The policy's rules, their tests' arithmetic and calibration, on hand-built patterns (no
I/O). The closed forms in app/alerts/stats.py are checked against scipy's distributions."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from scipy.stats import betabinom, nbinom, norm
from scipy.stats import t as student

from app.alerts import rules, stats
from app.customers.state import RECENT_VISITS, CustomerState, EventFacts
from app.policy.schemas import PolicyBody
from app.scoring.service import PRIOR, score

POLICY = PolicyBody()
ALPHA = POLICY.rules.significance(POLICY.false_alarms)


def customer(
    days: list[date], *, name: str = "c", amount: int = 200_000, categories: tuple[str, ...] = ()
) -> CustomerState:
    facts = [EventFacts("purchase", day, amount, "s1", frozenset(categories), True) for day in days]
    return CustomerState(name).apply(facts)


def every(first: date, step_days: int, count: int) -> list[date]:
    return [first + timedelta(days=step_days * n) for n in range(count)]


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 10, tzinfo=UTC)


def evaluate(
    state: CustomerState, day: date, policy: PolicyBody = POLICY, *, has_open_alerts: bool = False
) -> rules.Evaluation:
    scores = score(state, PRIOR, day, policy.horizon_days)
    return rules.evaluate(state, scores, policy, at(day), has_open_alerts=has_open_alerts)


def test_the_default_budget_is_shared_as_documented() -> None:
    assert sum(ALPHA.values()) == pytest.approx(0.05)
    assert ALPHA["inactivity"] == pytest.approx(0.05 * 2.5 / 7.5)
    assert ALPHA["frequency_drop"] == pytest.approx(0.05 * 3 / 7.5)


@pytest.mark.parametrize("shape", [1, 2, 3, 4])
@pytest.mark.parametrize(("gaps", "span", "silent"), [(3, 40, 10), (11, 77, 21), (50, 400, 5)])
def test_silence_survival_is_the_negative_binomial_cdf(
    shape: int, gaps: int, span: int, silent: int
) -> None:
    expected = nbinom.cdf(shape - 1, gaps + 0.5, span / (span + shape * silent))
    assert stats.silence_survival(gaps, span, silent, shape) == pytest.approx(expected, rel=1e-9)


def test_first_silence_is_the_first_day_below_alpha() -> None:
    for gaps, span, shape in [(11, 77, 4), (5, 150, 1), (30, 300, 2)]:
        day = stats.first_silence_at(gaps, span, shape, 0.01)
        assert day is not None
        assert stats.silence_survival(gaps, span, day, shape) <= 0.01
        assert stats.silence_survival(gaps, span, day - 1, shape) > 0.01
    assert stats.first_silence_at(1, 3000, 1, 1e-9) is None  # not within ten years


@pytest.mark.parametrize(("purchases", "trials", "run"), [(3, 10, 4), (20, 21, 2), (5, 60, 30)])
def test_a_run_without_a_category_is_the_beta_binomial_zero(
    purchases: int, trials: int, run: int
) -> None:
    expected = betabinom.pmf(0, run, purchases + 0.5, trials - purchases + 0.5)
    assert stats.run_without_p_value(purchases, trials, run) == pytest.approx(expected, 1e-9)


@pytest.mark.parametrize("df", [3, 5, 10, 30])
@pytest.mark.parametrize("value", [-6.0, -4.0, -2.5, -1.0, 0.5])
def test_the_t_statistic_maps_to_the_normal_deviate_of_its_tail(df: int, value: float) -> None:
    exact = norm.ppf(student.cdf(value, df))
    approximate = stats.t_to_z(value, df)
    assert approximate == pytest.approx(exact, abs=0.035)
    if abs(exact) >= 1.5:  # in the tails that decide, never a stronger claim than exact
        assert abs(approximate) <= abs(exact)


@pytest.mark.parametrize("z", [-2.0, -2.5, -3.0, -3.5])
@pytest.mark.parametrize("history", [20.0, 40.0, 120.0])
def test_the_scan_costs_less_than_the_union_bound_and_more_than_one_window(
    z: float, history: float
) -> None:
    windows = [w for w in range(4, 27) if history - w >= 8]
    scan = stats.scan_p_value(z, windows, history)
    assert norm.cdf(z) < scan <= len(windows) * norm.cdf(z)
    # Overlapping windows are far from independent: with the history long beside them, a
    # fraction of the union bound (with 20 weeks, windows of 4 to 12 overlap less).
    assert scan < (0.5 if history >= 40 else 0.7) * len(windows) * norm.cdf(z)
    assert stats.scan_p_value(z, [8], history) == pytest.approx(norm.cdf(z))


def test_regularity_and_dispersion_come_from_the_gaps() -> None:
    assert stats.regularity_of([7] * 11) == stats.MAX_REGULARITY
    assert stats.regularity_of([1, 1, 1, 25] * 4) == 1  # bunched: no regularity to rely on
    assert stats.regularity_of([7, 7]) < stats.MAX_REGULARITY  # too few gaps to trust
    assert stats.gap_spread([7] * 40) < stats.MIN_DISPERSION  # floored where it is used
    assert stats.gap_spread([]) == 1.0
    assert stats.spread_of_sums(3, 21, 3 * 49) == stats.gap_spread([7, 7, 7])


def test_the_inactivity_test_alarms_poisson_customers_at_its_rate() -> None:
    """Customers who keep their (Poisson) rhythm, looked at on a random day: the share
    whose silence the rule finds surprising is its significance, as the budget says."""
    rng = random.Random(2026)
    alpha = ALPHA["inactivity"]
    alarmed = 0
    trials = 20_000
    for _ in range(trials):
        gap = rng.uniform(3, 30)
        moments, now = [0.0], 0.0
        while now < 400:
            now += rng.expovariate(1 / gap)
            moments.append(now)
        look = rng.uniform(200, 400)
        seen = [m for m in moments if m <= look]
        days = sorted({math.floor(m) for m in seen})
        if len(days) < 4:
            continue
        silent = math.floor(look) - days[-1]
        p = stats.silence_survival(len(days) - 1, days[-1] - days[0], silent, 1)
        alarmed += p <= alpha
    assert alarmed / trials <= alpha * 1.15


def test_the_category_test_alarms_steady_habits_at_its_rate() -> None:
    """A habit bought on a share p of visits, looked at after a random visit: the run
    since it was last bought is surprising for a share of at most the significance."""
    rng = random.Random(7)
    alpha = ALPHA["category_lapse"]
    alarmed = 0
    trials = 20_000
    for _ in range(trials):
        share = rng.uniform(0.3, 0.95)
        bought = [rng.random() < share for _ in range(rng.randint(20, 80))]
        if bought.count(True) < 4:
            continue
        last = max(i for i, b in enumerate(bought) if b)
        first = bought.index(True)
        run = len(bought) - 1 - last
        p = stats.run_without_p_value(bought.count(True) - 1, last - first, run)
        alarmed += p <= alpha
    assert alarmed / trials <= alpha * 1.15


def test_the_frequency_test_alarms_steady_customers_at_its_rate() -> None:
    """Poisson customers who keep their rhythm for a year, looked at on a random day: the
    share whose visits in some window from 4 to 26 weeks look like a fall is at most the
    rule's significance (the scan's correction, not one window's)."""
    rng = random.Random(11)
    alpha = ALPHA["frequency_drop"]
    start = date(2025, 1, 6)
    alarmed = tried = 0
    for n in range(3000):
        gap = rng.uniform(2, 20)
        moment, days = 0.0, set()
        while moment < 364:
            days.add(start + timedelta(days=math.floor(moment)))
            moment += rng.expovariate(1 / gap)
        look = start + timedelta(days=rng.randint(250, 364))
        seen = sorted(d for d in days if d < look)
        if len(seen) < 8:
            continue
        verdict = rules._frequency_drop(  # the test alone, whatever the other rules say
            state := customer(seen, name=f"c{n}"),
            rules._Weeks.of(state, look),
            POLICY.rules.frequency_drop,
            alpha,
        )
        tried += 1
        alarmed += verdict.p_value <= alpha
    assert tried > 2500
    assert alarmed / tried <= alpha * 1.3


def test_a_rare_customer_who_misses_a_visit_raises_no_frequency_alarm() -> None:
    # Once every four weeks for a year, then nothing for eight weeks, then one visit.
    days = every(date(2025, 1, 6), 28, 13)
    days.append(days[-1] + timedelta(weeks=8))
    verdict = evaluate(customer(days), days[-1] + timedelta(days=1)).verdicts["frequency_drop"]
    assert verdict.evidence["ratio"] <= 0.7  # the fall is as large as for a halving one...
    assert verdict.p_value > ALPHA["frequency_drop"]  # ...but too few visits to be sure
    assert not verdict.firing


def test_the_fall_is_judged_against_the_customers_own_regularity() -> None:
    """The same counts are significant for a clockwork customer, not for an erratic one."""
    start = date(2025, 1, 6)  # a Monday
    # 26 weeks with 2 visits each, then 8 weeks with 1: clockwork.
    regular = [start + timedelta(weeks=w, days=d) for w in range(26) for d in (0, 3)]
    regular += [start + timedelta(weeks=26 + w) for w in range(8)]
    # The same 52 visits before, bunched: 4 a week every other week.
    bunched = [start + timedelta(weeks=w, days=d) for w in range(0, 26, 2) for d in (0, 1, 2, 3)]
    bunched += [start + timedelta(weeks=26 + w) for w in range(8)]
    today = start + timedelta(weeks=34, days=1)
    steady = evaluate(customer(regular), today).verdicts["frequency_drop"]
    erratic = evaluate(customer(bunched), today).verdicts["frequency_drop"]
    assert steady.evidence["recent_visits"] == erratic.evidence["recent_visits"] == 8
    assert steady.evidence["earlier_visits"] == erratic.evidence["earlier_visits"] == 51
    assert steady.evidence["dispersion"] < 0.5 < 1.5 < erratic.evidence["dispersion"]
    assert steady.firing
    assert steady.p_value < erratic.p_value
    assert not erratic.firing


def test_inactivity_next_check_is_the_day_the_rule_can_first_fire() -> None:
    days = every(date(2026, 1, 5), 7, 12)  # weekly to 2026-03-23
    state = customer(days)
    evaluation = evaluate(state, date(2026, 3, 24))
    verdict = evaluation.verdicts["inactivity"]
    assert not verdict.firing
    needed = next(
        s
        for s in range(1, 400)
        if nbinom.cdf(3, 11.5, 77 / (77 + 4 * s)) <= ALPHA["inactivity"]  # shape 4: weekly
    )
    assert verdict.changes_on == date(2026, 3, 23) + timedelta(days=needed)
    assert not evaluate(state, verdict.changes_on - timedelta(days=1)).verdicts["inactivity"].firing
    assert evaluate(state, verdict.changes_on).verdicts["inactivity"].firing


def test_a_short_silence_never_fires_whatever_the_rhythm() -> None:
    state = customer(every(date(2026, 1, 5), 1, 60))  # daily for two months, to 2026-03-05
    verdict = evaluate(state, date(2026, 3, 5) + timedelta(days=10)).verdicts["inactivity"]
    assert verdict.p_value < ALPHA["inactivity"]  # ten days is a surprise for them...
    assert not verdict.firing  # ...but the rule waits min_days (14)
    assert verdict.changes_on == date(2026, 3, 5) + timedelta(days=14)


def test_a_customer_short_of_loyalty_visits_needs_no_check_until_they_visit() -> None:
    state = customer(every(date(2026, 1, 5), 7, 3))
    evaluation = evaluate(state, date(2026, 5, 1))
    assert not evaluation.eligible
    assert evaluation.next_check_at is None


def test_a_new_loyal_customer_is_checked_when_their_tenure_is_reached() -> None:
    state = customer(every(date(2026, 1, 5), 2, 10))  # ten visits in twenty days
    evaluation = evaluate(state, date(2026, 1, 24))
    assert not evaluation.eligible
    policy_tenure = date(2026, 1, 5) + timedelta(days=POLICY.loyalty.min_tenure_days)
    assert evaluation.next_check_at is not None
    assert evaluation.next_check_at.date() <= policy_tenure


def test_a_customer_gone_for_longer_than_the_lost_age_is_counted_not_called() -> None:
    state = customer(every(date(2024, 1, 1), 7, 30))  # weekly, last visit 2024-07-22
    last = date(2024, 7, 22)
    before = evaluate(state, last + timedelta(days=365))
    assert before.eligible
    assert before.verdicts["inactivity"].firing
    assert not before.lost
    gone = evaluate(state, last + timedelta(days=366))
    assert gone.lost
    assert not gone.eligible
    assert gone.next_check_at is None  # only a visit can change anything now
    # With open alerts they are still refreshed (and resolve if the customer returns).
    assert evaluate(state, last + timedelta(days=366), has_open_alerts=True).next_check_at
    # The policy can turn the age off.
    keep = PolicyBody.model_validate({"loyalty": {"lost_after_days": None}})
    assert evaluate(state, last + timedelta(days=900), keep).eligible


def test_a_lapsed_category_risks_its_share_and_names_it() -> None:
    start = date(2025, 6, 2)
    wine = customer(every(start, 7, 30), categories=("grocery", "wine"), name="w")
    later = [start + timedelta(days=7 * n) for n in range(30, 40)]
    wine.apply(
        [EventFacts("purchase", d, 200_000, "s1", frozenset({"grocery"}), True) for d in later]
    )
    verdict = evaluate(wine, later[-1] + timedelta(days=1)).verdicts["category_lapse"]
    assert verdict.firing
    (lapsed,) = verdict.evidence["lapsed"]
    assert lapsed["category"] == "wine"
    assert verdict.stake == pytest.approx(30 / 70)  # wine's share of the purchases
    assert lapsed["summary"].startswith("bought wine 30 times in")


def test_the_latest_visit_days_are_kept_whatever_the_order() -> None:
    days = every(date(2025, 1, 1), 3, RECENT_VISITS + 20)
    shuffled = days[:]
    random.Random(3).shuffle(shuffled)
    in_order, mixed = customer(days), customer(shuffled + shuffled[:10])
    assert in_order.recent_days == mixed.recent_days
    assert in_order.recent_days == [d.isoformat() for d in days[-RECENT_VISITS:]]


def test_severity_follows_the_value_at_risk() -> None:
    assert rules.severity_of(499.99, POLICY) == "medium"
    assert rules.severity_of(500, POLICY) == "high"
    assert rules.severity_of(99, POLICY) == "low"


@pytest.mark.parametrize("order", [1, -1])
def test_first_visit_spend_and_segment_do_not_depend_on_order(order: int) -> None:
    facts = [
        EventFacts("purchase", date(2026, 1, 9), 30, "s", frozenset(), True, "gold"),
        EventFacts("purchase", date(2026, 1, 5), 10, "s", frozenset(), True, "silver"),
        EventFacts("purchase", date(2026, 1, 5), 5, "s", frozenset(), False, None),
        EventFacts("purchase", date(2026, 1, 9), 1, "s", frozenset(), False, "bronze"),
    ][::order]
    # Within a day the visit's first purchase comes first whatever the order of days.
    facts = sorted(facts, key=lambda f: not f.new_visit)
    state = CustomerState("c").apply(facts)
    assert state.first_visit_amount == 15
    assert (state.segment, state.segment_on) == ("gold", date(2026, 1, 9))


def test_a_customer_who_drops_many_habits_gets_bounded_evidence() -> None:
    start = date(2025, 6, 2)
    names = tuple(f"aisle-{n:03d}" for n in range(60))
    state = customer(every(start, 7, 30), categories=("grocery", *names), name="many")
    later = [start + timedelta(days=7 * n) for n in range(30, 42)]
    state.apply(
        [EventFacts("purchase", d, 200_000, "s1", frozenset({"grocery"}), True) for d in later]
    )
    verdict = evaluate(state, later[-1] + timedelta(days=1)).verdicts["category_lapse"]
    assert verdict.firing
    evidence = verdict.evidence
    assert evidence["lapsed_categories"] == 60
    assert len(evidence["lapsed"]) == rules.LISTED_LAPSES
    assert evidence["summary"].count("bought ") == rules.SUMMARY_LAPSES
    assert evidence["summary"].endswith("; and 57 more")
    assert verdict.stake == pytest.approx(60 * 30 / (60 * 30 + 42))  # their share of purchases
