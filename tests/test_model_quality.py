"""/v1/reports/model-quality, the degradation check, and /v1/reports/defector-profiles.

The score's numbers are compared with an offline computation written here another way:
customer by customer in plain Python, AUC by counting pairs, Brier and calibration by
hand. The rules' precision and the profiles are checked on small chains worked out by hand.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, insert, select

from app.alerts import queries
from app.models import (
    Alert,
    CustomerVisitDay,
    ModelFit,
    ModelQualityAlarm,
    PurchaseEvent,
    WebhookDelivery,
    WebhookMessage,
)
from app.quality import service
from app.scoring import pareto
from app.scoring.pareto import ParetoNbdParams
from tests.conftest import Clock, Keys, event
from tests.test_alerts import post, visits, weekly

pytestmark = pytest.mark.anyio

# The chain is drawn from Pareto/NBD with these parameters (days): a model fitted with
# them is as good as a model can be on it.
TRUE = ParetoNbdParams(r=2.0, alpha=30.0, s=0.8, beta=150.0)
ABSURD = ParetoNbdParams(r=0.01, alpha=1e4, s=10.0, beta=1.0)  # everyone long dead
NOW = "2026-03-02T12:00:00+00:00"  # with H = 90, 2025-12-01 is the latest matured Monday
MONDAYS = [date(2025, 11, 3) + timedelta(weeks=k) for k in range(5)]


def drawn_history(customers: int = 500, seed: int = 7) -> dict[str, list[date]]:
    """Visit days of customers who buy at a Gamma-distributed rate until an exponential
    lifetime (Gamma-distributed death rate) ends, first visits in the first half of 2025."""
    rng = random.Random(seed)
    end = date(2026, 3, 2)
    history = {}
    for k in range(customers):
        rate = rng.gammavariate(TRUE.r, 1 / TRUE.alpha)
        life = rng.expovariate(rng.gammavariate(TRUE.s, 1 / TRUE.beta))
        first = date(2025, 1, 1) + timedelta(days=rng.randrange(180))
        days, t = {first}, 0.0
        while True:
            t += rng.expovariate(rate)
            if t > life or first + timedelta(days=int(t)) >= end:
                break
            days.add(first + timedelta(days=int(t)))
        history[f"c{k:03d}"] = sorted(days)
    return history


async def insert_rows(app: FastAPI, model: Any, rows: Sequence[dict[str, Any]]) -> None:
    async with app.state.engine.begin() as connection:
        await connection.execute(insert(model.__table__), list(rows))


async def add_fit(app: FastAPI, params: ParetoNbdParams, fitted_at: str) -> int:
    async with app.state.engine.begin() as connection:
        result = await connection.execute(
            insert(ModelFit).returning(ModelFit.id),
            {
                "model": "pareto_nbd",
                "r": params.r,
                "alpha": params.alpha,
                "s": params.s,
                "beta": params.beta,
                "log_likelihood": -1.0,
                "customers": 500,
                "converged": True,
                "as_of": datetime.fromisoformat(fitted_at).date(),
                "fitted_at": datetime.fromisoformat(fitted_at),
            },
        )
        return int(result.scalar_one())


async def store_history(app: FastAPI, history: dict[str, list[date]]) -> None:
    rows = [{"customer_id": c, "day": d} for c, days in history.items() for d in days]
    await insert_rows(app, CustomerVisitDay, rows)


# ---- the offline computation ------------------------------------------------------------


def offline_week(
    history: dict[str, list[date]], monday: date, params: ParetoNbdParams, horizon: int = 90
) -> list[tuple[float, bool, float, float]]:
    """(predicted, stayed away, recency, relative recency) of each customer loyal on
    `monday` by the default policy (4 visit days, 60 days' tenure, silent at most 365)."""
    found: list[tuple[float, bool, float, float]] = []
    eve = monday - timedelta(days=1)
    for days in history.values():
        before = [d for d in days if d < monday]
        if len(before) < 4 or before[0] + timedelta(days=60) > monday:
            continue
        first, last = before[0], before[-1]
        if (eve - last).days > 365:
            continue
        x, t_x, age = len(before) - 1, (last - first).days, (eve - first).days
        predicted = float(pareto.p_no_purchase_within(params, x, t_x, age, horizon))
        away = not any(monday <= d < monday + timedelta(days=horizon) for d in days)
        recency = float((monday - last).days)
        found.append((predicted, away, recency, recency / (t_x / x)))
    return found


def auc_by_pairs(scores: Sequence[float], truth: Sequence[bool]) -> float:
    stayed = [s for s, y in zip(scores, truth, strict=True) if y]
    came = [s for s, y in zip(scores, truth, strict=True) if not y]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in stayed for b in came)
    return wins / (len(stayed) * len(came))


def summary(rows: Sequence[tuple[float, bool, float, float]]) -> dict[str, float]:
    predicted = [r[0] for r in rows]
    truth = [r[1] for r in rows]
    observed = sum(truth) / len(rows)
    mean = sum(predicted) / len(rows)
    return {
        "observed": observed,
        "mean": mean,
        "brier": sum((p - y) ** 2 for p, y in zip(predicted, truth, strict=True)) / len(rows),
        "auc": auc_by_pairs(predicted, truth),
        "recency": auc_by_pairs([r[2] for r in rows], truth),
        "relative": auc_by_pairs([r[3] for r in rows], truth),
    }


async def test_the_weekly_numbers_equal_an_offline_computation_on_the_same_history(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    clock.set(NOW)
    history = drawn_history()
    await store_history(app, history)
    # One fit from 2025-11-10 06:00 (after that Monday began), a second from 2025-11-20.
    early = ParetoNbdParams(r=1.5, alpha=25.0, s=0.6, beta=120.0)
    first_fit = await add_fit(app, early, "2025-11-10T06:00:00+00:00")
    second_fit = await add_fit(app, TRUE, "2025-11-20T00:00:00+00:00")
    params = {"from": "2025-11-03", "to": "2025-12-08"}
    response = await client.get("/v1/reports/model-quality", params=params, headers=keys.read)
    assert response.status_code == 200, response.text
    body = response.json()
    weeks = body["weeks"]
    assert [w["week_start"] for w in weeks] == [m.isoformat() for m in MONDAYS]
    # Before the first fit, the earliest scores; from its fitted_at, each fit in turn.
    assert [(w["model_source"], w["model_fit_id"]) for w in weeks] == [
        ("earliest_fit", first_fit),
        ("earliest_fit", first_fit),
        ("fit_in_force", first_fit),
        ("fit_in_force", second_fit),
        ("fit_in_force", second_fit),
    ]
    pooled: list[tuple[float, bool, float, float]] = []
    for week, monday in zip(weeks, MONDAYS, strict=True):
        rows = offline_week(history, monday, early if monday < date(2025, 11, 24) else TRUE)
        pooled += rows
        expected = summary(rows)
        assert week["customers"] == len(rows)
        assert week["horizon_end"] == (monday + timedelta(days=90)).isoformat()
        assert week["observed_no_purchase_rate"] == pytest.approx(expected["observed"], abs=1e-4)
        assert week["mean_predicted"] == pytest.approx(expected["mean"], abs=1e-4)
        assert week["calibration_error"] == pytest.approx(
            abs(expected["mean"] - expected["observed"]), abs=2e-4
        )
        assert week["brier"] == pytest.approx(expected["brier"], abs=1e-4)
        assert week["auc"] == pytest.approx(expected["auc"], abs=1e-4)
        assert week["recency_auc"] == pytest.approx(expected["recency"], abs=1e-4)
        assert week["relative_recency_auc"] == pytest.approx(expected["relative"], abs=1e-4)
    overall = summary(pooled)
    assert body["overall"]["observations"] == len(pooled)
    assert body["overall"]["brier"] == pytest.approx(overall["brier"], abs=1e-4)
    assert body["overall"]["auc"] == pytest.approx(overall["auc"], abs=1e-4)
    assert body["overall"]["recency_auc"] == pytest.approx(overall["recency"], abs=1e-4)
    for k, row in enumerate(body["calibration"]):
        inside = [r for r in pooled if min(int(r[0] * 10), 9) == k]
        assert (row["lower"], row["upper"], row["customers"]) == (k / 10, (k + 1) / 10, len(inside))
        if inside:
            mean = sum(r[0] for r in inside) / len(inside)
            observed = sum(r[1] for r in inside) / len(inside)
            assert row["mean_predicted"] == pytest.approx(mean, abs=1e-4)
            assert row["observed_rate"] == pytest.approx(observed, abs=1e-4)
    # The true model on its own chain: not degraded.
    assert body["degradation"]["judged"] is True
    assert body["degradation"]["degraded"] is False

    as_csv = await client.get(
        "/v1/reports/model-quality", params=params, headers={**keys.read, "Accept": "text/csv"}
    )
    lines = list(csv.reader(io.StringIO(as_csv.text)))
    assert lines[0][:3] == ["week_start", "horizon_end", "customers"]
    assert [line[0] for line in lines[1:]] == [m.isoformat() for m in MONDAYS]


async def count(app: FastAPI, model: Any, *where: Any) -> int:
    async with app.state.engine.connect() as connection:
        query = select(func.count()).select_from(model.__table__).where(*where)
        return int((await connection.execute(query)).scalar_one())


async def test_a_planted_absurd_model_is_announced_once_and_the_true_one_is_not(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    clock.set(NOW)
    await store_history(app, drawn_history())
    created = await client.post(
        "/v1/webhooks/endpoints",
        json={"url": "http://127.0.0.1:9/ops", "event_types": ["model.degraded"]},
        headers=keys.manage,
    )
    assert created.status_code == 201, created.text
    await add_fit(app, TRUE, "2025-06-01T00:00:00+00:00")
    transactions, metrics = app.state.transactions, app.state.metrics

    verdict = await service.check(transactions, metrics, clock)
    assert (verdict.judged, verdict.degraded, verdict.week_start) == (True, False, MONDAYS[-1])
    assert metrics.registry.get_sample_value("radar_model_degraded") == 0
    assert await count(app, WebhookMessage) == 0

    await add_fit(app, ABSURD, "2025-11-28T00:00:00+00:00")  # in force on 2025-12-01
    for _ in range(2):  # the same week is announced once
        verdict = await service.check(transactions, metrics, clock)
        assert verdict.degraded is True
        assert metrics.registry.get_sample_value("radar_model_degraded") == 1
    assert any("predicted" in reason for reason in verdict.reasons)
    assert await count(app, ModelQualityAlarm) == 1
    assert await count(app, WebhookMessage, WebhookMessage.type == "model.degraded") == 1
    assert await count(app, WebhookDelivery) == 1

    changes = (await client.get("/v1/alerts/changes", headers=keys.read)).json()["events"]
    assert len(changes) == 1
    change = changes[0]
    assert (change["type"], change["alert_id"], change["customer_id"], change["alert"]) == (
        "model.degraded",
        None,
        None,
        None,
    )
    notice = change["model_quality"]
    assert notice["week_start"] == "2025-12-01"
    assert "radar refit" in notice["suggestion"]
    assert notice["links"]["report"] == "/v1/reports/model-quality?from=2025-12-01&to=2025-12-08"
    # A customer's history (the page) goes through their alerts: the notice is not in it.
    history = await transactions.read(lambda c: queries.customer_history(c, "c001"))
    assert history == []

    report = await client.get("/v1/reports/model-quality", headers=keys.read)
    assert report.json()["degradation"]["degraded"] is True


async def test_bad_spans_are_refused_naming_the_field(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    clock.set(NOW)
    for path in ("/v1/reports/model-quality", "/v1/reports/defector-profiles"):
        for params, pointer, code in (
            ({"from": "2025-12-01", "to": "2025-11-01"}, "/query/from", "empty_span"),
            ({"from": "2021-01-04", "to": "2025-12-01"}, "/query/from", "span_too_long"),
            ({"from": "0"}, "/query/from", "timestamp_type"),
            ({"to": "yesterday"}, "/query/to", None),
            ({"form": "2025-01-01"}, "/query/form", "unknown_parameter"),
        ):
            response = await client.get(path, params=params, headers=keys.read)
            assert response.status_code == 422, (path, params, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            errors = response.json()["errors"]
            assert errors[0]["pointer"] == pointer, (path, params, errors)
            if code:
                assert errors[0]["code"] == code
    # A span a year long is fine for the model report.
    fine = {"from": "2024-12-02", "to": "2025-12-01"}
    response = await client.get("/v1/reports/model-quality", params=fine, headers=keys.read)
    assert response.status_code == 200, response.text


# ---- the rules --------------------------------------------------------------------------


def purchase(
    customer: str, day: date, amount: str, *categories: str, refund: bool = False
) -> dict[str, Any]:
    at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    name = f"{customer}-{day.isoformat()}-{'r' if refund else 'p'}"
    return {
        "event_id": name,
        "customer_id": customer,
        "store_id": "s",
        "kind": "refund" if refund else "purchase",
        "occurred_at": at,
        "occurred_on": day,
        "received_at": at,
        "amount": Decimal(amount),
        "currency": "EUR",
        "items": [{"category": c, "amount": "1", "quantity": 1} for c in categories] or None,
        "content_hash": hashlib.blake2b(name.encode(), digest_size=16).digest(),
    }


def alert(customer: str, rule: str, opened: str, **evidence: Any) -> dict[str, Any]:
    at = datetime.fromisoformat(opened)
    return {
        "customer_id": customer,
        "rule": rule,
        "status": "open",
        "severity": "low",
        "score": 0.5,
        "value_at_risk": Decimal(10),
        "store_id": "s",
        "evidence": evidence,
        "policy_version": 0,
        "opened_at": at,
        "updated_at": at,
    }


def every(first: date, days: int, count: int) -> list[date]:
    return [first + timedelta(days=days * k) for k in range(count)]


async def test_each_rule_is_judged_on_what_the_customer_did_in_the_horizon_after(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """Alerts opened on Monday 2026-01-05 10:00 (judged: + 90 days is 2026-04-05), with the
    90 days before from 2025-10-07 10:00:

    - inactivity: I1 never came back (right), I2 came on 2026-02-01 (wrong);
    - frequency_drop (max_ratio 0.7): F1 10 visit days before, 5 after: 5 < 7 (right);
      F2 10 before, 8 after (wrong);
    - spend_drop (0.7): 4 visits of 50 before (50 per visit, limit 35); S1 4 of 20 after
      (right); S2 4 of 45 less a refund of 30: 150 / 4 = 37.5 (wrong); S3 4 of 45 less a
      refund of 60: 30 (right: the refund counts);
    - category_lapse of wine: C1 bought grocery only after (right), C2 wine again (wrong).

    P1's inactivity alert opened 2026-04-01: its window ends 2026-06-30, after now."""
    clock.set("2026-06-01T00:00:00+00:00")
    opened = "2026-01-05T10:00:00+00:00"
    before, after = date(2025, 10, 20), date(2026, 1, 10)
    events = [
        purchase("I2", date(2026, 2, 1), "10"),
        *[purchase("F1", d, "10") for d in every(before, 7, 10) + every(after, 14, 5)],
        *[purchase("F2", d, "10") for d in every(before, 7, 10) + every(after, 9, 8)],
    ]
    for name, amount, refund in (("S1", "20", None), ("S2", "45", "30"), ("S3", "45", "60")):
        events += [purchase(name, d, "50") for d in every(before, 14, 4)]
        events += [purchase(name, d, amount) for d in every(after, 14, 4)]
        if refund:
            events.append(purchase(name, date(2026, 2, 20), refund, refund=True))
    events += [purchase("C1", d, "10", "grocery") for d in every(after, 7, 5)]
    events += [purchase("C2", d, "10", "grocery", "wine") for d in every(after, 7, 5)]
    await insert_rows(app, PurchaseEvent, events)
    lapse = {"lapsed": [{"category": "wine"}]}
    await insert_rows(
        app,
        Alert,
        [
            *[alert(c, "inactivity", opened) for c in ("I1", "I2")],
            *[alert(c, "frequency_drop", opened) for c in ("F1", "F2")],
            *[alert(c, "spend_drop", opened) for c in ("S1", "S2", "S3")],
            *[alert(c, "category_lapse", opened, **lapse) for c in ("C1", "C2")],
            alert("P1", "inactivity", "2026-04-01T09:00:00+00:00"),
        ],
    )
    params = {"from": "2026-01-05", "to": "2026-04-06"}
    body = (await client.get("/v1/reports/model-quality", params=params, headers=keys.read)).json()
    by_week = [
        (r["week_start"], r["rule"], r["judged"], r["right"], r["precision"], r["pending"])
        for r in body["rules_by_week"]
    ]
    assert by_week == [
        ("2026-01-05", "inactivity", 2, 1, 0.5, 0),
        ("2026-01-05", "frequency_drop", 2, 1, 0.5, 0),
        ("2026-01-05", "spend_drop", 3, 2, 0.6667, 0),
        ("2026-01-05", "category_lapse", 2, 1, 0.5, 0),
        ("2026-03-30", "inactivity", 0, 0, None, 1),
    ]
    overall = [(r["rule"], r["judged"], r["right"], r["pending"]) for r in body["rules"]]
    assert overall[0] == ("inactivity", 2, 1, 1)


# ---- defector profiles ------------------------------------------------------------------


async def test_defector_profiles_compare_the_lost_with_the_retained(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """Span 2026-04-01 to 2026-07-01. Every visit is one purchase of the customer's amount.

    | customer | store | segment | first spend | visits | categories |
    | A | north | gold | 10 | Mondays 2026-01-05 to 03-23 | grocery, wine |
    | B | north | gold | 40 | the same, and 04-06, 04-13, 04-20 | grocery |
    | C | north | silver | 20 | the same, and 04-06 | grocery |
    | D | south | - | 30 | Mondays 2025-01-06 to 04-07 (14) | grocery, wine |
    | E | south | gold | 50 | Mondays 2026-01-05 to 03-23 | grocery |

    Lost: A (an alert resolved lost on 2026-05-03) and D (silent past 365 days on
    2026-04-08, never alerted: lost uncalled). Retained: B and C (loyal on 04-01, visited
    since). E was loyal but did not visit in the span: neither.

    First-visit spend quartiles of 10, 20, 30, 40, 50: 20, 30, 40, so Q1 = [10, 20] (A, C),
    Q2 = (20, 30] (D), Q3 = (30, 40] (B). Tenure on 04-01: A, B, C 86 days (under 6
    months), D 450 days (1 to 2 years). Rows (lost, retained, lost share, retained share,
    rate), most over-represented first:

    - home_store: south 1, 0, .5, 0, 1; north 1, 2, .5, 1, .3333
    - segment: none 1, 0, .5, 0, 1; gold 1, 1, .5, .5, .5; silver 0, 1, 0, .5, 0
    - first_visit_spend: Q2 1, 0; Q1 1, 1; Q3 0, 1
    - tenure: 1 to 2 years 1, 0; under 6 months 1, 2
    - category: wine 2, 0, 1, 0, 1; grocery 2, 2, 1, 1, .5
    """
    chain = (
        ("A", "north", "gold", "10", weekly(date(2026, 1, 5), 12), ("grocery", "wine")),
        ("B", "north", "gold", "40", weekly(date(2026, 1, 5), 12), ("grocery",)),
        ("C", "north", "silver", "20", weekly(date(2026, 1, 5), 12), ("grocery",)),
        ("D", "south", None, "30", weekly(date(2025, 1, 6), 14), ("grocery", "wine")),
        ("E", "south", "gold", "50", weekly(date(2026, 1, 5), 12), ("grocery",)),
    )
    for name, store, segment, amount, days, categories in chain:
        # Each is evaluated the day after their last visit: nobody is alerted by the rules.
        clock.set(datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), UTC))
        events = visits(name, days, amount=amount, categories=categories)
        for item in events:
            item["store_id"] = store
            if segment:
                item["attributes"] = {"segment": segment}
        await post(client, keys, events)
    clock.set("2026-04-21T00:00:00+00:00")
    later = [("B", d) for d in weekly(date(2026, 4, 6), 3)] + [("C", date(2026, 4, 6))]
    await post(
        client,
        keys,
        [
            event(
                f"{name}-{day}",
                customer_id=name,
                store_id="north",
                occurred_at=f"{day}T12:00:00Z",
                amount="5",
                items=[{"category": "grocery", "amount": "1"}],
            )
            for name, day in later
        ],
    )
    lost = alert("A", "inactivity", "2026-04-28T09:00:00+00:00")
    lost |= {
        "status": "resolved",
        "resolution": "lost",
        "reason": "price",
        "resolved_by": "maria",
        "resolved_at": datetime(2026, 5, 3, 9, tzinfo=UTC),
    }
    await insert_rows(app, Alert, [lost])
    clock.set("2026-07-02T00:00:00+00:00")
    params = {"from": "2026-04-01", "to": "2026-07-01"}
    body = (
        await client.get("/v1/reports/defector-profiles", params=params, headers=keys.read)
    ).json()
    assert (body["lost"], body["retained"]) == (2, 2)
    rows = [
        (
            r["dimension"],
            r["value"],
            r["lost"],
            r["retained"],
            r["lost_share"],
            r["retained_share"],
            r["defection_rate"],
        )
        for r in body["rows"]
    ]
    assert rows == [
        ("home_store", "south", 1, 0, 0.5, 0.0, 1.0),
        ("home_store", "north", 1, 2, 0.5, 1.0, 0.3333),
        ("segment", None, 1, 0, 0.5, 0.0, 1.0),
        ("segment", "gold", 1, 1, 0.5, 0.5, 0.5),
        ("segment", "silver", 0, 1, 0.0, 0.5, 0.0),
        ("first_visit_spend", "Q2", 1, 0, 0.5, 0.0, 1.0),
        ("first_visit_spend", "Q1", 1, 1, 0.5, 0.5, 0.5),
        ("first_visit_spend", "Q3", 0, 1, 0.0, 0.5, 0.0),
        ("tenure", "1 to 2 years", 1, 0, 0.5, 0.0, 1.0),
        ("tenure", "under 6 months", 1, 2, 0.5, 1.0, 0.3333),
        ("category", "wine", 2, 0, 1.0, 0.0, 1.0),
        ("category", "grocery", 2, 2, 1.0, 1.0, 0.5),
    ]
    bands = {r["value"]: (r["lower"], r["upper"]) for r in body["rows"]}
    assert (bands["Q1"], bands["Q2"], bands["Q3"]) == ((10, 20), (20, 30), (30, 40))
    assert bands["1 to 2 years"] == (366, 730)

    as_csv = await client.get(
        "/v1/reports/defector-profiles", params=params, headers={**keys.read, "Accept": "text/csv"}
    )
    lines = list(csv.reader(io.StringIO(as_csv.text)))
    assert lines[0] == [
        "dimension",
        "value",
        "lower",
        "upper",
        "lost",
        "retained",
        "lost_share",
        "retained_share",
        "defection_rate",
    ]
    assert lines[1] == ["home_store", "south", "", "", "1", "0", "0.5", "0.0", "1.0"]
