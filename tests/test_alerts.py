"""End to end: purchases in, alerts out, through the real API, database and sweeper."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from scipy.stats import nbinom
from sqlalchemy import select

from app.alerts.service import SweepResult, sweep
from app.kit.auth import Scope
from app.kit.settings import Settings
from app.models import AlertEvent
from tests.conftest import Clock, Keys, ScoredTransport, event

pytestmark = pytest.mark.anyio


def visits(
    customer: str,
    days: Iterable[date],
    *,
    amount: str = "20",
    categories: Iterable[str] = ("grocery",),
    tag: str = "",
) -> list[dict[str, Any]]:
    names = list(categories)
    return [
        event(
            f"{customer}{tag}-{day.isoformat()}",
            customer_id=customer,
            occurred_at=f"{day.isoformat()}T12:00:00Z",
            amount=amount,
            items=[{"category": name, "amount": "1"} for name in names] or None,
        )
        for day in days
    ]


def weekly(first: date, weeks: int, *weekdays: int) -> list[date]:
    """Visit days: `weekdays` (0 = the first day's weekday) of each of `weeks` weeks."""
    return [first + timedelta(weeks=w, days=d) for w in range(weeks) for d in weekdays or (0,)]


async def post(
    client: httpx.AsyncClient, keys: Keys, events: list[dict[str, Any]], size: int = 1000
) -> None:
    for start in range(0, len(events), size):
        chunk = events[start : start + size]
        response = await client.post(
            "/v1/purchases/batch", json={"events": chunk}, headers=keys.ingest
        )
        assert response.status_code == 200, response.text
        assert response.json()["rejected"] == 0, response.text


async def customer(client: httpx.AsyncClient, keys: Keys, customer_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/customers/{customer_id}", headers=keys.read)
    assert response.status_code == 200, response.text
    return dict(response.json())


def unresolved(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {alert["rule"]: alert for alert in view["alerts"] if alert["status"] != "resolved"}


async def sweep_at(app: FastAPI, clock: Clock, when: datetime) -> SweepResult:
    clock.set(when)
    return await sweep(app.state.transactions, app.state.evaluator, clock)


async def feed(app: FastAPI) -> list[tuple[int, str, int, str]]:
    async with app.state.sessionmaker() as session:
        rows = await session.execute(select(AlertEvent).order_by(AlertEvent.seq))
        return [(e.seq, e.type, e.alert_id, e.data["rule"]) for (e,) in rows]


def silence_needed(gaps: int, span: int, shape: int, alpha: float) -> int:
    """Days of silence after which a customer with `gaps` gaps over `span` days, gamma gaps
    of `shape`, is surprising at `alpha`: worked out here with scipy's negative binomial
    (the service has its own closed form)."""
    return next(
        s
        for s in range(1, 3650)
        if nbinom.cdf(shape - 1, gaps + 0.5, span / (span + shape * s)) <= alpha
    )


INACTIVITY_ALPHA = 0.05 * 2.5 / 7.5  # the default budget's inactivity share


async def test_a_regular_customer_who_stops_is_alerted_when_due_and_resolved_on_return(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    first = date(2026, 1, 5)  # a Monday; twelve Mondays to 2026-03-23
    clock.set("2026-03-24T09:00:00+00:00")
    await post(client, keys, visits("card-1", weekly(first, 12)))
    view = await customer(client, keys, "card-1")
    assert view["alerts"] == []
    # Eleven gaps of exactly 7 days: as regular as the rule assumes anyone is (shape 4).
    # The alert is due the first day the silence is that surprising.
    silent = silence_needed(11, 77, 4, INACTIVITY_ALPHA)
    assert silent == 21
    alert_day = date(2026, 3, 23) + timedelta(days=silent)
    # Following the customer's own next checks (the weekly windows of the other rules slide
    # on Mondays, so there are checks before), each sweep evaluates exactly this customer,
    # no check is a minute early, and the alert opens on that day.
    for _ in range(5):
        due = datetime.fromisoformat(view["next_check_at"])
        assert due.date() <= alert_day
        assert (await sweep_at(app, clock, due - timedelta(minutes=1))).customers == 0
        assert (await sweep_at(app, clock, due)).customers == 1
        view = await customer(client, keys, "card-1")
        if "inactivity" in unresolved(view):
            break
        assert due.date() < alert_day
    assert due.date() == alert_day
    alert = unresolved(view)["inactivity"]
    assert alert["status"] == "open"
    evidence = alert["evidence"]
    assert evidence["last_visit_on"] == "2026-03-23"
    assert evidence["mean_gap_days"] == 7.0
    assert evidence["regularity"] == 4
    assert evidence["days_since_last_visit"] == silent
    assert evidence["expected_visits_since"] == 3.0
    assert evidence["summary"] == (
        f"visited every 7 days for 11 weeks; no visit for {silent} days, 3 expected"
    )
    assert evidence["p_value"] <= evidence["significance"] == pytest.approx(INACTIVITY_ALPHA, 1e-2)
    assert float(alert["value_at_risk"]) > 0
    assert set(unresolved(view)) == {"inactivity"}

    # Sweeping again before the next check changes nothing: no duplicate alert.
    assert (await sweep_at(app, clock, due + timedelta(hours=1))).customers == 0

    # The customer comes back: the ingest itself resolves the alert.
    back = due + timedelta(days=2)
    clock.set(back)
    await post(client, keys, visits("card-1", [back.date()], tag="-back"))
    view = await customer(client, keys, "card-1")
    assert unresolved(view) == {}
    (resolved,) = view["alerts"]
    assert resolved["id"] == alert["id"]
    assert resolved["resolution"] == "customer_returned"

    # And lapses again later: following the customer's own next checks, a new alert (not
    # the old one reopened). The long gap makes them look less regular, so it takes at
    # least as long as for a Poisson visitor with their new mean gap... at most.
    for _ in range(10):
        later = datetime.fromisoformat(view["next_check_at"])
        assert (await sweep_at(app, clock, later)).customers == 1
        view = await customer(client, keys, "card-1")
        if "inactivity" in unresolved(view):
            break
    reopened = unresolved(view)["inactivity"]
    assert reopened["id"] != alert["id"]
    span = (back.date() - first).days
    slowest = silence_needed(12, span, 1, INACTIVITY_ALPHA)
    fastest = silence_needed(12, span, 4, INACTIVITY_ALPHA)
    waited = (clock().date() - back.date()).days
    assert fastest <= waited <= slowest
    assert reopened["evidence"]["regularity"] < 4

    events = await feed(app)
    assert [(kind, alert_id) for _, kind, alert_id, _ in events] == [
        ("alert.opened", alert["id"]),
        ("alert.resolved", alert["id"]),
        ("alert.opened", reopened["id"]),
    ]
    assert [seq for seq, *_ in events] == sorted({seq for seq, *_ in events})


async def test_a_customer_who_halves_visits_raises_frequency_drop_and_a_rare_one_does_not(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    first = date(2025, 9, 1)  # a Monday
    clock.set("2026-06-09T10:00:00+00:00")  # the Tuesday after the last visit below
    halving = visits("halving", weekly(first, 30, 0, 3))
    halving += visits("halving", weekly(first + timedelta(weeks=30), 10), tag="-after")
    steady = visits("steady", weekly(first, 40, 0, 3))
    # Every four weeks for a year, then one visit skipped: a gap of eight weeks.
    rare_days = [first + timedelta(weeks=4 * n) for n in range(9)]
    rare_days += [rare_days[-1] + timedelta(weeks=8)]
    rare = visits("rare", rare_days)
    await post(client, keys, halving + steady + rare)

    alert = unresolved(await customer(client, keys, "halving"))["frequency_drop"]
    evidence = alert["evidence"]
    # Twice a week for 30 weeks, then once a week for the last 10: the clearest window is
    # exactly the 10 weeks since the change, against the 30 weeks before (the first visit
    # left out).
    assert (evidence["recent_weeks"], evidence["recent_visits"]) == (10, 10)
    assert (evidence["earlier_visits"], evidence["earlier_days"]) == (2 * 30 - 1, 30 * 7)
    assert evidence["ratio"] == pytest.approx((10 / 70) / (59 / 210), abs=1e-3)
    assert evidence["windows_tried"] == 23  # 4 to 26 weeks: 40 weeks of history, 8 before each
    assert evidence["p_value"] <= evidence["significance"]
    assert evidence["summary"] == (
        "visited every 4 days over 7 months; 10 visits in the last 10 weeks, 20 expected "
        "(every 7 days)"
    )
    # What the fall puts at risk: the share of visits lost, of the customer's value.
    assert alert["score"] == pytest.approx(1 - evidence["ratio"], abs=1e-3)
    assert unresolved(await customer(client, keys, "steady")) == {}
    rare_view = await customer(client, keys, "rare")
    assert "frequency_drop" not in unresolved(rare_view)


async def test_spend_drop_and_category_lapse_open_and_resolve(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    first = date(2025, 9, 1)
    clock.set("2026-05-26T10:00:00+00:00")
    before, after = weekly(first, 28), weekly(first + timedelta(weeks=28), 10)
    events = visits("spender", before, amount="40") + visits("spender", after, amount="15")
    events += visits("wine", before, categories=("grocery", "wine"))
    events += visits("wine", after, categories=("grocery",))
    await post(client, keys, events)

    spend = unresolved(await customer(client, keys, "spender"))
    assert set(spend) == {"spend_drop"}
    evidence = spend["spend_drop"]["evidence"]
    # The clearest window: the last 13 weeks hold all ten cheaper visits (and three at 40),
    # against 25 earlier visits all at 40, a sharper contrast than 8 weeks against an
    # earlier period holding two cheap visits.
    assert (evidence["recent_weeks"], evidence["recent_visits"]) == (13, 13)
    assert evidence["recent_spend_per_visit"] == round((3 * 40 + 10 * 15) / 13, 2)
    assert evidence["earlier_spend_per_visit"] == 40.0
    assert evidence["ratio"] == pytest.approx((15 / 40) ** (10 / 13), abs=1e-3)
    assert evidence["p_value"] <= evidence["significance"]
    assert evidence["summary"] == (
        "spend per visit fell from 40.00 to 20.77 over the last 13 visits (13 weeks)"
    )
    lapse = unresolved(await customer(client, keys, "wine"))
    assert set(lapse) == {"category_lapse"}
    (lapsed,) = lapse["category_lapse"]["evidence"]["lapsed"]
    assert lapsed["category"] == "wine"
    assert lapsed["last_bought_on"] == before[-1].isoformat()
    # Wine on all 28 visits before, then none: two visits without it are already a
    # surprise at the rule's share of the budget (both habits tested).
    assert lapsed["visits_since"] >= 2
    assert lapsed["p_value"] <= lapse["category_lapse"]["evidence"]["significance"]
    # A category lapse puts that category's share of the customer's purchases at risk.
    assert lapsed["share_of_purchases"] == round(28 / (38 + 28), 3)

    # Buying wine again ends the lapse at once.
    await post(
        client, keys, visits("wine", [date(2026, 5, 26)], categories=("wine",), tag="-again")
    )
    view = await customer(client, keys, "wine")
    assert unresolved(view) == {}
    assert view["alerts"][0]["resolution"] == "customer_returned"


async def test_duplicates_and_shuffled_batches_end_in_the_same_alerts(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    first = date(2025, 9, 1)
    clock.set("2026-06-09T10:00:00+00:00")

    def history(customer_id: str) -> list[dict[str, Any]]:
        return visits(customer_id, weekly(first, 30, 0, 3)) + visits(
            customer_id, weekly(first + timedelta(weeks=30), 10), tag="-after"
        )

    await post(client, keys, history("in-order"))
    shuffled = history("shuffled")
    random.Random(7).shuffle(shuffled)
    resent = shuffled + shuffled[::3]  # a third of them twice
    for start in range(0, len(resent), 9):
        await post(client, keys, resent[start : start + 9])

    def outcome(view: dict[str, Any]) -> dict[str, Any]:
        return {
            rule: (alert["severity"], alert["evidence"], alert["value_at_risk"])
            for rule, alert in unresolved(view).items()
        }

    in_order = await customer(client, keys, "in-order")
    assert outcome(in_order) == outcome(await customer(client, keys, "shuffled"))
    assert set(outcome(in_order)) == {"frequency_drop"}


async def test_the_sweeper_touches_only_due_customers(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    clock.set("2026-03-24T09:00:00+00:00")
    await post(client, keys, visits("due", weekly(date(2026, 1, 5), 12)))
    # Two visits: not loyal yet, so nothing can change for them without a new visit.
    await post(client, keys, visits("new", [date(2026, 3, 20), date(2026, 3, 23)]))
    assert (await customer(client, keys, "new"))["next_check_at"] is None
    due = datetime.fromisoformat((await customer(client, keys, "due"))["next_check_at"])
    result = await sweep_at(app, clock, due + timedelta(days=30))
    assert (result.customers, result.batches) == (1, 1)


async def test_a_policy_change_resolves_alerts_of_a_disabled_rule(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    clock.set("2026-05-01T09:00:00+00:00")
    await post(client, keys, visits("card-1", weekly(date(2026, 1, 5), 12)))
    assert set(unresolved(await customer(client, keys, "card-1"))) == {"inactivity"}

    policy = {"rules": {"inactivity": {"enabled": False}}}
    response = await client.put("/v1/policy", json=policy, headers=keys.manage)
    assert response.status_code == 200, response.text
    # Every customer is due after a policy change; the sweep applies the new version.
    assert (await sweep_at(app, clock, clock() + timedelta(seconds=1))).customers == 1
    (alert,) = (await customer(client, keys, "card-1"))["alerts"]
    assert (alert["rule"], alert["status"]) == ("inactivity", "resolved")
    assert alert["resolution"] == "policy_changed"
    # A silence is the inactivity rule's alone: no other rule speaks for it instead.


async def test_one_case_per_customer_inactivity_mutes_what_it_explains(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    first = date(2025, 9, 1)  # a Monday
    clock.set("2026-06-09T10:00:00+00:00")
    # Twice a week for 30 weeks, then once a week for 10: the fall in visits is an alert.
    days = weekly(first, 30, 0, 3) + weekly(first + timedelta(weeks=30), 10)
    await post(client, keys, visits("slowing", days))
    frequency = unresolved(await customer(client, keys, "slowing"))["frequency_drop"]
    # Then nothing at all: once the silence is an alert, it says everything, and the
    # frequency alert is resolved as explained by it.
    for _ in range(20):
        view = await customer(client, keys, "slowing")
        if "inactivity" in unresolved(view):
            break
        await sweep_at(app, clock, datetime.fromisoformat(view["next_check_at"]))
    assert set(unresolved(view)) == {"inactivity"}
    (resolved,) = [a for a in view["alerts"] if a["id"] == frequency["id"]]
    assert resolved["resolution"] == "explained_by_inactivity"
    assert resolved["evidence"]["muted_by"] == "inactivity"
    # Inactivity risks the whole value; the frequency alert risked the lost visits' share.
    assert float(unresolved(view)["inactivity"]["value_at_risk"]) > float(
        frequency["value_at_risk"]
    )


async def test_exclusions_and_minimum_value_keep_alerts_closed(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    policy = {
        "exclusions": {"stores": ["staff-canteen"], "segments": ["employee"]},
        "min_value_at_risk": 1000,
    }
    response = await client.put("/v1/policy", json=policy, headers=keys.manage)
    assert response.status_code == 200, response.text
    clock.set("2026-05-01T09:00:00+00:00")
    days = weekly(date(2026, 1, 5), 12)
    canteen = visits("canteen", days)
    for item in canteen:
        item["store_id"] = "staff-canteen"
    employee = visits("employee", days)
    for item in employee:
        item["attributes"] = {"segment": "employee"}
    big = visits("big", days, amount="900")
    small = visits("small", days, amount="5")
    await post(client, keys, canteen + employee + big + small)
    assert unresolved(await customer(client, keys, "canteen")) == {}
    employee_view = await customer(client, keys, "employee")
    assert employee_view["pattern"]["segment"] == "employee"
    assert unresolved(employee_view) == {}
    assert unresolved(await customer(client, keys, "small")) == {}
    big_alert = unresolved(await customer(client, keys, "big"))["inactivity"]
    assert big_alert["severity"] == "high"  # above the default 500 of value at risk


@pytest.mark.parametrize("sweepers", [2])
async def test_concurrent_sweepers_evaluate_each_customer_once(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, sweepers: int
) -> None:
    clock.set("2026-03-24T09:00:00+00:00")
    days = weekly(date(2026, 1, 5), 12)
    events = [e for n in range(300) for e in visits(f"c{n:03}", days)]
    # Whole histories per request: a history split over requests is evaluated in between.
    await post(client, keys, events, size=len(days) * 80)
    clock.set("2026-06-01T00:00:00+00:00")
    results = await asyncio.gather(
        *(
            sweep(app.state.transactions, app.state.evaluator, clock, batch_size=50)
            for _ in range(sweepers)
        )
    )
    assert sum(r.customers for r in results) == 300
    opened = [e for e in await feed(app) if e[1] == "alert.opened"]
    assert len(opened) == 300
    assert len({alert_id for _, _, alert_id, _ in opened}) == 300


async def test_a_stopping_sweeper_finishes_its_batch_and_leaves_the_rest_due(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    clock.set("2026-03-24T09:00:00+00:00")
    days = weekly(date(2026, 1, 5), 12)
    await post(client, keys, [e for n in range(30) for e in visits(f"c{n:02}", days)])
    clock.set("2026-06-01T00:00:00+00:00")
    batches = 0

    def stop_after_one() -> bool:
        nonlocal batches
        batches += 1
        return batches > 1

    first = await sweep(
        app.state.transactions,
        app.state.evaluator,
        clock,
        batch_size=10,
        should_stop=stop_after_one,
    )
    assert (first.customers, first.batches) == (10, 1)
    assert len([e for e in await feed(app) if e[1] == "alert.opened"]) == 10
    rest = await sweep(app.state.transactions, app.state.evaluator, clock, batch_size=10)
    assert rest.customers == 20


async def test_the_background_sweeper_opens_alerts_by_itself(
    settings: Settings, clock: Clock
) -> None:
    from asgi_lifespan import LifespanManager

    from app.main import create_app
    from tests.conftest import _truncate, make_key

    clock.set("2026-06-01T09:00:00+00:00")
    app = create_app(
        settings.model_copy(update={"sweep_interval": timedelta(milliseconds=50)}), clock=clock
    )
    async with LifespanManager(app):
        await _truncate(app)
        key = await make_key(app, "till", Scope.INGEST, Scope.READ)
        headers = {"Authorization": f"Bearer {key}"}
        transport = ScoredTransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as client:
            response = await client.post(
                "/v1/purchases/batch",
                json={"events": visits("card-1", weekly(date(2026, 1, 5), 12))},
                headers=headers,
            )
            assert response.json()["accepted"] == 12
            # Evaluated at ingest already (silent since March): the alert is open.
            view = (await client.get("/v1/customers/card-1", headers=headers)).json()
            assert set(unresolved(view)) == {"inactivity"}
            # A month later, the loop refreshes the open alert on its weekly check.
            clock.set(clock() + timedelta(days=30))
            for _ in range(100):
                metrics = (await client.get("/metrics")).text
                if "radar_sweep_customers_total 1.0" in metrics:
                    break
                await asyncio.sleep(0.05)
            assert "radar_sweep_customers_total 1.0" in metrics
            view = (await client.get("/v1/customers/card-1", headers=headers)).json()
            alert = unresolved(view)["inactivity"]
            assert (
                alert["evidence"]["days_since_last_visit"]
                == (date(2026, 7, 1) - date(2026, 3, 23)).days
            )
