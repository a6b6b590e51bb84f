"""The synthetic chain: the generator itself, then the whole service against its ground truth.

The end-to-end test streams a year of a chain through the real API a week at a time, with
the evaluation clock following the simulated time, the sweeper run and the population model
refitted as the service does, and measures how many defectors of each kind the rule meant
for them caught, and how many loyal customers were alarmed for nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.alerts.service import sweep
from app.ingestion.schemas import PurchaseEventIn
from app.scoring.service import refit
from app.synthetic.chain import (
    DEFECTIONS,
    RULES_FOR,
    Assessment,
    Chain,
    ChainSpec,
    OpenedAlert,
    assess,
    generate,
    local_day,
)
from app.synthetic.limit import Limit, limit
from tests.conftest import Clock, Keys

pytestmark = pytest.mark.slow  # runs in CI; locally with RADAR_TEST_SLOW=1

# 52 weeks from a Monday, so that the simulated weeks are the rules' weeks; 40 % of the
# regular customers defect, so that each kind has some 40 customers to measure recall on.
SPEC = ChainSpec(
    customers=500, stores=4, start=date(2025, 11, 3), days=364, seed=2026, defection_share=0.4
)


# Ends of weeks 26 and 39. The service refits every 6 h; here refitting every 4 weeks gave
# the same alerts at 2 s a fit (11 s for the first, on 13 weeks of history).
REFITS = (181, 272)


@pytest.fixture(scope="module")
def chain() -> Chain:
    return generate(SPEC)


def test_the_same_spec_gives_the_same_chain(chain: Chain) -> None:
    again = generate(SPEC)
    assert again.events == chain.events
    assert again.truth == chain.truth
    other = generate(ChainSpec(customers=500, start=SPEC.start, days=SPEC.days, seed=2027))
    assert other.events != chain.events


def test_a_customer_does_not_depend_on_how_many_others_there_are(chain: Chain) -> None:
    smaller = generate(ChainSpec(customers=50, start=SPEC.start, days=SPEC.days, seed=SPEC.seed))
    histories = chain.by_customer()
    same_kind = [c for c, t in smaller.truth.items() if t.kind == chain.truth[c].kind]
    assert len(same_kind) >= 10  # kinds are dealt anew for another population size
    for customer_id in same_kind:
        assert smaller.by_customer().get(customer_id) == histories.get(customer_id)


def test_the_population_has_every_kind_in_the_asked_numbers(chain: Chain) -> None:
    kinds: dict[str, int] = defaultdict(int)
    for truth in chain.truth.values():
        kinds[truth.kind] += 1
    assert kinds["occasional"] == 100  # 20 % of 500
    assert {kinds[kind] for kind in DEFECTIONS} == {40}  # 40 % of 400 regulars, by four
    assert kinds["loyal"] == 240
    regular = [t for t in chain.truth.values() if t.kind != "occasional"]
    assert all(3 <= t.mean_gap_days <= 30 for t in regular)
    assert len({t.home_store for t in regular}) == SPEC.stores


def test_events_are_sorted_valid_api_events_in_the_past(chain: Chain) -> None:
    moments = [datetime.fromisoformat(e["occurred_at"]) for e in chain.events]
    assert moments == sorted(moments)
    assert max(moments) < datetime.now(UTC)
    assert len({e["event_id"] for e in chain.events}) == len(chain.events)
    for body in chain.events:
        event = PurchaseEventIn.model_validate(body)
        assert event.occurred_at.utcoffset() == SPEC.utc_offset
        assert SPEC.start <= local_day(body) < SPEC.end
        if event.items:
            assert sum(item.amount for item in event.items) == event.amount
    refunds = [e for e in chain.events if e["kind"] == "refund"]
    assert 0.01 < len(refunds) / len(chain.events) < 0.04
    purchases = {e["event_id"]: e for e in chain.events if e["kind"] == "purchase"}
    for refund in refunds:
        bought = purchases[refund["refunds_event_id"]]
        assert bought["customer_id"] == refund["customer_id"]
        assert bought["occurred_at"] < refund["occurred_at"]
        assert Decimal(refund["amount"]) <= Decimal(bought["amount"])


def test_the_future_is_refused_unless_asked_for() -> None:
    today = datetime.now(UTC).date()
    with pytest.raises(ValueError, match="in the future"):
        generate(ChainSpec(customers=5, start=today - timedelta(days=28), days=30))
    # Ending today at the tills' offset (+01:00): the last day closed at 23:00 UTC yesterday.
    assert generate(ChainSpec(customers=5, start=today - timedelta(days=30), days=30)).events
    future = generate(ChainSpec(customers=5, start=today, days=30, allow_future=True))
    assert future.events


def _visits(events: list[dict[str, Any]], since: date, until: date) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "purchase" and since <= local_day(e) < until]


def test_the_truth_is_what_the_events_show(chain: Chain) -> None:
    histories = chain.by_customer()
    for customer_id, truth in chain.truth.items():
        events = histories.get(customer_id, [])
        assert (truth.defected_on is None) == (truth.kind in ("loyal", "occasional"))
        if truth.defected_on is None:
            continue
        before = _visits(events, truth.defected_on - timedelta(days=182), truth.defected_on)
        after = _visits(events, truth.defected_on, SPEC.end)
        if truth.kind == "stop":
            assert after == []
        if truth.kind == "category_lapse":
            lapsed = truth.lapsed_category
            assert sum(lapsed in _categories(e) for e in before) >= 3
            assert not any(lapsed in _categories(e) for e in after)
            assert len({local_day(e) for e in after}) >= 3  # they keep coming
    # Per kind, over everyone: halvers come a third to a half as often, and spend-droppers
    # spend a third as much per purchase (single customers are too noisy to check alone).
    assert 0.3 < _rate_ratio(chain, "halve") < 0.6
    assert 0.25 < _spend_ratio(chain, "spend_drop") < 0.45
    assert 0.8 < _rate_ratio(chain, "spend_drop") < 1.25
    assert 0.8 < _spend_ratio(chain, "halve") < 1.25


def _categories(event: dict[str, Any]) -> set[str]:
    return {item["category"] for item in event.get("items") or []}


def _before_after(chain: Chain, kind: str) -> tuple[list[Any], list[Any], int, int]:
    histories = chain.by_customer()
    before: list[Any] = []
    after: list[Any] = []
    days_before = days_after = 0
    for truth in chain.truth.values():
        if truth.kind != kind or truth.defected_on is None:
            continue
        since = truth.defected_on - timedelta(days=120)
        before += _visits(histories[truth.customer_id], since, truth.defected_on)
        after += _visits(histories[truth.customer_id], truth.defected_on, SPEC.end)
        days_before += 120
        days_after += (SPEC.end - truth.defected_on).days
    return before, after, days_before, days_after


def _rate_ratio(chain: Chain, kind: str) -> float:
    before, after, days_before, days_after = _before_after(chain, kind)
    return (len(after) / days_after) / (len(before) / days_before)


def _spend_ratio(chain: Chain, kind: str) -> float:
    before, after, _, _ = _before_after(chain, kind)

    def mean(events: list[Any]) -> float:
        return sum(float(e["amount"]) for e in events) / len(events)

    return mean(after) / mean(before)


async def _post(client: httpx.AsyncClient, keys: Keys, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 1000):
        response = await client.post(
            "/v1/purchases/batch",
            json={"events": events[start : start + 1000]},
            headers=keys.ingest,
        )
        assert response.status_code == 200, response.text
        assert response.json()["rejected"] == 0, response.text


async def _feed(client: httpx.AsyncClient, keys: Keys) -> list[dict[str, Any]]:
    """Every alert change, from the change feed."""
    changes: list[dict[str, Any]] = []
    after = 0
    while True:
        response = await client.get(
            "/v1/alerts/changes", params={"after": after, "limit": 1000}, headers=keys.read
        )
        assert response.status_code == 200, response.text
        page = response.json()
        changes += page["events"]
        after = page["next_cursor"]
        if not page["has_more"]:
            return changes


async def _stream(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, chain: Chain
) -> None:
    """A week of events at a time, posted at the end of the week (the clock on the next
    Monday), then the sweeper at that moment; the population model refitted now and then,
    as the service's background refit would."""
    week: list[dict[str, Any]] = []
    last = chain.spec.end - timedelta(days=1)
    for day, events in chain.by_day():
        week += events
        if day.weekday() != 6 and day != last:
            continue
        clock.set(datetime.combine(day + timedelta(days=1), time(), UTC))
        await _post(client, keys, week)
        week = []
        await sweep(app.state.transactions, app.state.evaluator, clock)
        if (day - chain.spec.start).days in REFITS:
            await refit(app.state.transactions, clock().date())


@dataclass(frozen=True)
class _Outcome:
    ever: Assessment  # every alert opened in the year
    at_end: Assessment  # the alerts still unresolved at its end

    def report(self) -> str:
        lines = [
            f"{kind}: {d.caught}/{d.customers} by {'/'.join(RULES_FOR[kind])} in the year "
            f"({d.caught_any} by any rule, median {d.median_delay_days} days after), "
            f"{self.at_end.detections[kind].caught} open at the end"
            for kind, d in self.ever.detections.items()
        ]
        lines.append(
            f"loyal alarmed: {self.ever.false_alarms}/{self.ever.loyal}, by rule "
            f"{dict(self.ever.false_alarms_by_rule)}; still open at the end: "
            f"{self.at_end.false_alarms}; occasional alarmed: {self.ever.occasional_alarms}"
        )
        return "\n".join(lines)


# One simulation per database, shared by the tests below (it takes most of their time).
_OUTCOMES: dict[str, _Outcome] = {}


async def _simulated(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, chain: Chain
) -> _Outcome:
    url = app.state.settings.database_url
    if url not in _OUTCOMES:
        await _stream(app, client, keys, clock, chain)
        changes = await _feed(client, keys)
        last = {change["alert_id"]: change for change in changes}
        opened = [OpenedAlert.from_api(c["alert"]) for c in changes if c["type"] == "alert.opened"]
        unresolved = [
            OpenedAlert.from_api(c["alert"]) for c in last.values() if c["type"] != "alert.resolved"
        ]
        _OUTCOMES[url] = _Outcome(assess(chain.truth, opened), assess(chain.truth, unresolved))
    return _OUTCOMES[url]


@pytest.fixture
async def outcome(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, chain: Chain
) -> _Outcome:
    return await _simulated(app, client, keys, clock, chain)


@pytest.fixture(scope="module")
def bound(chain: Chain) -> Limit:
    """The statistical limit on the same chain, at 5 % false alarms among its unchanged
    loyal customers (app/synthetic/limit.py)."""
    return limit(chain, [c for c, t in chain.truth.items() if t.kind == "loyal"])


@pytest.mark.anyio
async def test_false_alarms_at_one_moment_stay_within_the_budget(outcome: _Outcome) -> None:
    report = outcome.report()
    # The default budget: 5 open alerts per 100 unchanged loyal customers at any moment.
    # Measured on this seed: 4 of 240 at the end (1.7 %) on both databases.
    assert outcome.at_end.false_alarm_rate <= 0.05, report
    # The yearly figure, reported beside it: loyal customers alerted at some point of the
    # year. Measured on this seed: 60 of 240 (25 %; it was 104, 43 %, with the fixed
    # multiples of the mean gap): inactivity 35 (a fifth of the regulars take a holiday of
    # 10 to 24 days, a real surprise for a weekly customer), category_lapse 16,
    # frequency_drop 13, spend_drop 8; each resolved when the customer came back. Guards
    # against regressions.
    assert outcome.ever.false_alarm_rate <= 0.3, report
    assert outcome.ever.occasional_alarms <= 0.05 * outcome.ever.occasional, report


@pytest.mark.anyio
async def test_recall_at_one_moment_is_near_the_statistical_limit(
    outcome: _Outcome, bound: Limit
) -> None:
    report = outcome.report() + f"\nlimit: {dict(bound.recall)}"
    found = outcome.at_end.detections
    assert bound.false_alarms <= 0.05
    assert found["stop"].recall >= 0.95 * bound.recall["stop"], report
    assert found["spend_drop"].recall >= 0.9 * bound.recall["spend_drop"], report
    assert found["category_lapse"].recall >= 0.9 * bound.recall["category_lapse"], report


@pytest.mark.anyio
@pytest.mark.xfail(
    strict=True,
    reason="known: at the end of this chain the service has 17 of 40 halvers open against "
    "the limit's 22 (0.77 of it, short of 0.9): the limit is told the months in which "
    "changes happen and has its thresholds set on this chain's own unchanged customers; "
    "the service's test must look for a change in any window and hold its false-alarm "
    "rate for every customer (bench/README.md, detection, where the medians of larger "
    "chains are closer)",
)
async def test_halvers_are_caught_near_the_limit(outcome: _Outcome, bound: Limit) -> None:
    report = outcome.report() + f"\nlimit: {dict(bound.recall)}"
    assert outcome.at_end.detections["halve"].recall >= 0.9 * bound.recall["halve"], report


@pytest.mark.anyio
async def test_halvers_are_caught_as_far_as_measured(outcome: _Outcome, bound: Limit) -> None:
    report = outcome.report() + f"\nlimit: {dict(bound.recall)}"
    # Guards what works while the target above is missed (measured: 0.77 of the limit).
    assert outcome.at_end.detections["halve"].recall >= 0.65 * bound.recall["halve"], report
