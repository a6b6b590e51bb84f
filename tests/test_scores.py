"""Population model refits and GET /v1/customers/{id}."""

from __future__ import annotations

import random
from datetime import date, timedelta

import httpx
import pytest
from fastapi import FastAPI

from app.scoring.service import MIN_CUSTOMERS_TO_FIT, PRIOR, current_model, refit
from app.scoring.spend import expected_spend_per_visit
from tests.conftest import Keys, event

pytestmark = pytest.mark.anyio


async def _post(client: httpx.AsyncClient, keys: Keys, events: list[dict[str, object]]) -> None:
    for start in range(0, len(events), 1000):
        chunk = events[start : start + 1000]
        response = await client.post(
            "/v1/purchases/batch", json={"events": chunk}, headers=keys.ingest
        )
        assert response.json()["accepted"] == len(chunk), response.text


def _regular(customer: str, first: date, every_days: int, visits: int) -> list[dict[str, object]]:
    return [
        event(
            f"{customer}-{n}",
            customer_id=customer,
            occurred_at=f"{first + timedelta(days=n * every_days)}T12:00:00Z",
            amount="20",
            items=[{"category": "grocery", "amount": "20"}],
        )
        for n in range(visits)
    ]


async def test_customer_scores_follow_their_own_rhythm(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    start = date(2025, 1, 6)
    await _post(
        client,
        keys,
        _regular("weekly", start, 7, 40) + _regular("lapsed", start, 7, 10),
    )
    as_of = (start + timedelta(days=7 * 40)).isoformat()
    weekly, lapsed = [
        (
            await client.get(
                f"/v1/customers/{c}",
                params={"as_of": as_of, "horizon_days": 30},
                headers=keys.read,
            )
        ).json()
        for c in ("weekly", "lapsed")
    ]
    assert weekly["model"]["source"] == "prior"  # two customers are too few to fit
    assert weekly["pattern"]["visit_days"] == 40
    assert weekly["pattern"]["categories"]["grocery"]["purchases"] == 40
    assert weekly["scores"]["days_since_last_visit"] == 7
    assert lapsed["scores"]["days_since_last_visit"] == 7 * 31
    assert weekly["scores"]["p_no_purchase_within"] < 0.2
    assert lapsed["scores"]["p_no_purchase_within"] > 0.8
    # The gap is the posterior mean given the prior: between the customer's own 7 days and
    # the prior's population mean (alpha / r, months), and much nearer the customer's.
    x, T = 39, 7 * 40
    assert weekly["scores"]["expected_gap_days"] == pytest.approx((PRIOR.alpha + T) / (PRIOR.r + x))
    assert 7 < weekly["scores"]["expected_gap_days"] < 10 < PRIOR.alpha / PRIOR.r
    assert weekly["scores"]["value_at_risk"] > lapsed["scores"]["value_at_risk"]


async def test_unknown_customer_and_bad_parameters(client: httpx.AsyncClient, keys: Keys) -> None:
    missing = await client.get("/v1/customers/nobody", headers=keys.read)
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    bad = await client.get(
        "/v1/customers/x", params={"horizon_days": 0, "as_of": "yesterday"}, headers=keys.read
    )
    assert bad.status_code == 422
    assert {e["pointer"] for e in bad.json()["errors"]} == {"/query/horizon_days", "/query/as_of"}


async def test_scores_before_the_first_visit_are_null(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    await _post(client, keys, _regular("c", date(2025, 6, 2), 7, 3))
    body = (
        await client.get("/v1/customers/c", params={"as_of": "2025-01-01"}, headers=keys.read)
    ).json()
    assert body["scores"] is None


async def test_refit_keeps_the_prior_until_enough_customers_then_fits(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    transactions = app.state.transactions
    as_of = date(2026, 1, 1)
    assert await refit(transactions, as_of) is None
    assert (await transactions.read(current_model)).source == "prior"

    rng = random.Random(3)
    events: list[dict[str, object]] = []
    for n in range(MIN_CUSTOMERS_TO_FIT + 50):
        every = rng.choice([3, 7, 14, 30])
        visits = rng.randint(1, 12)
        events += _regular(
            f"c{n}", date(2025, 1, 1) + timedelta(days=rng.randint(0, 60)), every, visits
        )
    await _post(client, keys, events)
    fit = await refit(transactions, as_of)
    assert fit is not None
    assert fit.customers == MIN_CUSTOMERS_TO_FIT + 50
    model = await transactions.read(current_model)
    assert model.source == "fit"
    assert model.params != PRIOR
    assert model.log_likelihood == pytest.approx(fit.log_likelihood)
    body = (await client.get("/v1/customers/c1", headers=keys.read)).json()
    assert body["model"]["source"] == "fit"
    assert body["model"]["customers"] == MIN_CUSTOMERS_TO_FIT + 50
    assert body["model"]["name"] == "pareto_nbd"
    # The value at risk uses the fitted spend model (every customer here spent 20 a visit).
    assert model.spend is not None
    assert fit.spend_customers is not None
    assert fit.spend_customers >= 100
    x = body["pattern"]["visit_days"] - 1
    expected = expected_spend_per_visit(model.spend, [x], [20.0 if x else 0.0])[0]
    assert body["scores"]["expected_spend_per_visit"] == pytest.approx(expected, abs=0.01)
    assert body["scores"]["expected_spend_per_visit"] == pytest.approx(20, rel=0.05)


async def test_scores_as_of_a_day_see_only_the_history_up_to_it(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys
) -> None:
    import csv
    import io

    from app.scoring.export import export_scores

    await _post(client, keys, _regular("weekly", date(2026, 1, 5), 7, 10))  # to 2026-03-09
    await _post(client, keys, _regular("late", date(2026, 3, 1), 7, 2))

    async def rows(as_of: date) -> dict[str, dict[str, str]]:
        out = io.StringIO()
        await app.state.transactions.read(lambda c: export_scores(c, as_of, out))
        return {row["customer_id"]: row for row in csv.DictReader(io.StringIO(out.getvalue()))}

    early = await rows(date(2026, 2, 1))
    assert set(early) == {"weekly"}  # "late" had not come yet
    assert early["weekly"]["visit_days"] == "4"  # Jan 5, 12, 19, 26
    assert early["weekly"]["last_visit_on"] == "2026-01-26"
    assert early["weekly"]["days_since_last_visit"] == "6"
    assert early["weekly"]["as_of"] == "2026-02-01"
    assert early["weekly"]["model"] == "prior"

    later = await rows(date(2026, 6, 1))
    assert set(later) == {"weekly", "late"}
    assert later["weekly"]["visit_days"] == "10"
    # Silent for months: the score of no purchase within the horizon has grown.
    assert float(later["weekly"]["p_no_purchase_within"]) > float(
        early["weekly"]["p_no_purchase_within"]
    )
    assert float(later["weekly"]["value_at_risk"]) < float(early["weekly"]["value_at_risk"])
