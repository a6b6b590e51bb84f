"""The policy's rules and the next-check arithmetic, on hand-built patterns (no I/O)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from app.alerts import rules
from app.customers.state import CustomerState, EventFacts
from app.policy.schemas import PolicyBody
from app.scoring import pareto
from app.scoring.service import PRIOR, quiet_until, score

POLICY = PolicyBody()


def customer(
    days: list[date], *, name: str = "c", amount: int = 200_000, categories: tuple[str, ...] = ()
) -> CustomerState:
    facts = [EventFacts("purchase", day, amount, "s1", frozenset(categories), True) for day in days]
    return CustomerState(name).apply(facts)


def every(first: date, step_days: int, count: int) -> list[date]:
    return [first + timedelta(days=step_days * n) for n in range(count)]


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 10, tzinfo=UTC)


def evaluate(state: CustomerState, day: date, policy: PolicyBody = POLICY) -> rules.Evaluation:
    scores = score(state, PRIOR, day, policy.horizon_days)
    crossing = quiet_until(
        [state], PRIOR, day, policy.horizon_days, policy.rules.inactivity.score_threshold or 0.8
    )[0]
    return rules.evaluate(
        state, scores, policy, at(day), inactivity_crossing=crossing, has_open_alerts=False
    )


def test_a_rare_customer_who_misses_a_visit_raises_no_frequency_alarm() -> None:
    # Once every four weeks for a year, then nothing for eight weeks, then one visit.
    days = every(date(2025, 1, 6), 28, 13)
    days.append(days[-1] + timedelta(weeks=8))
    verdict = evaluate(customer(days), days[-1] + timedelta(days=1)).verdicts["frequency_drop"]
    assert verdict.evidence["ratio"] <= 0.6  # the fall is as large as for the halving one...
    assert verdict.evidence["p_value"] > 0.01  # ...but far too few visits to be significant
    assert not verdict.firing


def test_the_fall_is_judged_against_the_customers_own_regularity() -> None:
    """The same counts are significant for a clockwork customer, not for an erratic one."""
    start = date(2025, 1, 6)  # a Monday
    # 26 baseline weeks with 2 visits each, then 8 recent weeks with 1: clockwork.
    regular = [start + timedelta(weeks=w, days=d) for w in range(26) for d in (0, 3)]
    regular += [start + timedelta(weeks=26 + w) for w in range(8)]
    # The same 52 baseline visits, bunched: 4 a week every other week.
    bunched = [start + timedelta(weeks=w, days=d) for w in range(0, 26, 2) for d in (0, 1, 2, 3)]
    bunched += [start + timedelta(weeks=26 + w) for w in range(8)]
    today = start + timedelta(weeks=34, days=1)
    steady = evaluate(customer(regular), today).verdicts["frequency_drop"]
    erratic = evaluate(customer(bunched), today).verdicts["frequency_drop"]
    assert steady.evidence["recent_visits"] == erratic.evidence["recent_visits"] == 8
    assert steady.evidence["baseline_visits"] == erratic.evidence["baseline_visits"] == 52
    assert steady.evidence["dispersion"] == rules.MIN_DISPERSION
    assert erratic.evidence["dispersion"] > 1.5
    assert steady.firing
    assert steady.evidence["p_value"] < erratic.evidence["p_value"]
    assert not erratic.firing


def test_inactivity_next_check_is_the_day_the_rule_can_first_fire() -> None:
    policy = PolicyBody.model_validate({"rules": {"inactivity": {"score_threshold": None}}})
    days = every(date(2026, 1, 5), 7, 12)  # weekly to 2026-03-23
    state = customer(days)
    evaluation = evaluate(state, date(2026, 3, 24), policy)
    assert not evaluation.verdicts["inactivity"].firing
    assert evaluation.verdicts["inactivity"].changes_on == date(2026, 4, 13)  # 3 x 7 days
    assert evaluation.next_check_at is not None
    # Nothing else can change before: the weekly windows have under half a baseline yet
    # (they will from the Monday 8 + 13 weeks after the first visit).
    assert evaluation.verdicts["frequency_drop"].changes_on == date(2026, 6, 1)
    assert evaluation.next_check_at.date() == date(2026, 4, 13)
    assert not evaluate(state, date(2026, 4, 12), policy).verdicts["inactivity"].firing
    assert evaluate(state, date(2026, 4, 13), policy).verdicts["inactivity"].firing


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


def test_quiet_until_finds_the_first_day_the_score_reaches_the_threshold() -> None:
    states = [
        customer(every(date(2025, 6, 2), 7, 30), name="weekly"),
        customer(every(date(2025, 6, 2), 30, 6), name="monthly"),
        customer([date(2025, 6, 2)], name="once"),
    ]
    as_of = date(2025, 12, 29)
    found = quiet_until(states, PRIOR, as_of, 90, 0.8)
    for state, day in zip(states, found, strict=True):
        assert state.first_visit_on is not None
        assert state.last_visit_on is not None
        x = state.visit_days - 1
        t_x = (state.last_visit_on - state.first_visit_on).days

        def p_quiet(
            d: date, x: int = x, t_x: int = t_x, first: date = state.first_visit_on
        ) -> float:
            T = (d - first).days
            return float(pareto.p_no_purchase_within(PRIOR, [x], [t_x], [T], 90)[0])

        scan = next(
            (as_of + timedelta(n) for n in range(1, 731) if p_quiet(as_of + timedelta(n)) >= 0.8),
            None,
        )
        assert day == scan, state.customer_id


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
