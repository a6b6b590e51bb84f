"""Defection-score quality on the CDNOW sample: ROC AUC for "no purchase in the holdout".

Fit on purchases up to 1997-09-30 (39 weeks), score as of that day, and check who made no
purchase from 1997-10-01 to 1998-06-30 (39 weeks). Reference AUCs on all 2,357 customers:
BG/NBD 0.757, MBG/NBD 0.760, Pareto/NBD 0.770, weeks since last purchase 0.771.

Two ways to the same customers: straight from the file (the textbook computation), and
through the service: the calibration purchases are posted to the real ingestion API
(in-process ASGI, a throw-away SQLite file), the population model is refitted as the service
does, and every customer is scored from the service's own stored pattern. Pareto/NBD is not
wired into the service yet: here it is fitted, as `refit` fits BG/NBD, on the same stored
patterns in days, and scored from them.

Every score is reported at every horizon in HORIZONS (7 to 273 days), so that no horizon is
picked after looking at the holdout. A last table scores from the file only the customers the
service stored, to tell the population's share of a gap from the service's.

Run: .venv/bin/python bench/quality.py
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import asdict
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.stats import rankdata

from app.customers.state import CustomerState
from app.scoring import btyd, pareto
from app.scoring.history import summarise
from app.scoring.service import PopulationModel, score

DATA = Path(__file__).resolve().parent / "data" / "CDNOW_sample.txt"
CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_END = date(1998, 6, 30)
WEEK = 7.0
HOLDOUT_DAYS = (HOLDOUT_END - CALIBRATION_END).days  # 273
# Horizons of P(no purchase within H days), all reported: the API's default is 90.
HORIZONS = (7, 14, 30, 60, 90, 180, HOLDOUT_DAYS)
API_HORIZON = 90  # the default horizon_days of GET /v1/customers/{id}
MODELS = ("BG/NBD", "Pareto/NBD")
QUALITY_BAR = 0.771
REFERENCES = {"BG/NBD": 0.757, "MBG/NBD": 0.760, "Pareto/NBD": 0.770, "weeks since last": 0.771}


def roc_auc(score: NDArray[np.float64], positive: NDArray[np.bool_]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    ranks = rankdata(score)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def describe(params: btyd.BgNbdParams | pareto.ParetoNbdParams, log_likelihood: float) -> str:
    values = " ".join(f"{name}={value:.3f}" for name, value in asdict(params).items())
    return f"{values} LL={log_likelihood:.1f}"


def load() -> list[tuple[str, date, str]]:
    """(customer, day, dollars) per purchase."""
    rows = (line.split() for line in DATA.read_text().splitlines())
    return [(row[0], datetime.strptime(row[2], "%Y%m%d").date(), row[4]) for row in rows]


async def replay_through_the_service(
    purchases: list[tuple[str, date, str]],
) -> tuple[list[CustomerState], PopulationModel, int]:
    """Post the calibration purchases to the API, refit, and read back every stored pattern."""
    import httpx
    from asgi_lifespan import LifespanManager

    from app.customers.repository import get_state
    from app.keys.service import create_key
    from app.kit.auth import Scope
    from app.kit.db import unit_of_work
    from app.kit.settings import Settings
    from app.main import create_app
    from app.scoring.service import current_model, refit

    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(
            database_url=f"sqlite:///{directory}/quality.db",
            sqlite_synchronous="NORMAL",
            refit_interval=timedelta(0),
            rate_limit_ingest="off",  # the whole history through one key, as fast as it goes
            currency="USD",
            log_level="WARNING",
        )
        app = create_app(settings)
        async with LifespanManager(app):
            async with unit_of_work(app.state.sessionmaker) as session:
                key = (await create_key(session, "quality", [Scope.INGEST])).key
            transport = httpx.ASGITransport(app=app)
            rejected = 0
            async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
                events = [
                    {
                        "event_id": f"cdnow-{n}",
                        "customer_id": customer,
                        "store_id": "cdnow",
                        "occurred_at": f"{day.isoformat()}T12:00:00Z",
                        "amount": dollars,
                        "currency": "USD",
                    }
                    for n, (customer, day, dollars) in enumerate(purchases)
                    if day <= CALIBRATION_END
                ]
                for start in range(0, len(events), 1000):
                    response = await client.post(
                        "/v1/purchases/batch",
                        json={"events": events[start : start + 1000]},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    rejected += response.json()["rejected"]
            transactions = app.state.transactions
            await refit(transactions, CALIBRATION_END)
            model = await transactions.read(current_model)
            customers = sorted(
                {customer for customer, day, _ in purchases if day <= CALIBRATION_END}
            )
            states = await transactions.read(
                lambda connection: [get_state(connection, c) for c in customers]
            )
    return [state for state in states if state is not None], model, rejected


def pattern_summary(
    states: list[CustomerState],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(x, t_x, T) in days from stored patterns, read the way `service.score` reads them."""
    x, t_x, T = [], [], []
    for state in states:
        first, last = state.first_visit_on, state.last_visit_on
        assert first is not None
        assert last is not None
        x.append(max(state.visit_days - 1, 0))
        t_x.append((min(last, CALIBRATION_END) - first).days)
        T.append((CALIBRATION_END - first).days)
    return np.array(x, dtype=np.float64), np.array(t_x, dtype=np.float64), np.array(T, float)


def print_aucs(
    title: str,
    scores: dict[str, NDArray[np.float64]],
    no_purchase: NDArray[np.bool_],
    repeat: NDArray[np.bool_],
) -> None:
    print(f"\n{title}\n{'':44s} {'AUC all':>8s} {'AUC repeat':>11s}")
    for name, values in scores.items():
        print(
            f"{name:44s} {roc_auc(values, no_purchase):8.4f} "
            f"{roc_auc(values[repeat], no_purchase[repeat]):11.4f}"
        )


def model_scores(
    summary: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
    bg: btyd.BgNbdParams,
    pnbd: pareto.ParetoNbdParams,
    day: float,
) -> dict[str, NDArray[np.float64]]:
    """Every score in the tables, higher meaning more likely to make no purchase.

    `summary` is (x, t_x, T) in units of `day` days.
    """
    x, t_x, T = summary
    scores = {"time since last purchase": T - t_x}
    for days in HORIZONS:
        scores[f"BG/NBD P(no purchase within {days} days)"] = btyd.p_no_purchase_within(
            bg, x, t_x, T, days / day
        )
    for days in HORIZONS:
        scores[f"Pareto/NBD P(no purchase within {days} days)"] = pareto.p_no_purchase_within(
            pnbd, x, t_x, T, days / day
        )
    holdout = HOLDOUT_DAYS / day
    scores[f"BG/NBD -E[purchases in {HOLDOUT_DAYS} days]"] = -btyd.expected_purchases(
        bg, x, t_x, T, holdout
    )
    scores[f"Pareto/NBD -E[purchases in {HOLDOUT_DAYS} days]"] = -pareto.expected_purchases(
        pnbd, x, t_x, T, holdout
    )
    scores["Pareto/NBD 1 - P(alive)"] = 1 - pareto.p_alive(pnbd, x, t_x, T)
    return scores


def main() -> None:
    purchases = load()
    calibration = summarise(((c, day) for c, day, _ in purchases), CALIBRATION_END)
    buyers_later = {c for c, day, _ in purchases if CALIBRATION_END < day <= HOLDOUT_END}
    no_purchase = np.array([c not in buyers_later for c in calibration.customers])
    weeks = (calibration.x, calibration.t_x / WEEK, calibration.T / WEEK)
    repeat = calibration.x > 0

    bg = btyd.fit_bg_nbd(*weeks)
    pnbd = pareto.fit_pareto_nbd(*weeks)
    print(
        f"CDNOW sample: {len(calibration.customers)} customers, {int(no_purchase.sum())} "
        f"made no purchase in the {HOLDOUT_DAYS / WEEK:.1f}-week holdout"
    )
    print(
        f"BG/NBD fit (weeks):     {describe(bg.params, bg.log_likelihood)}"
        " (published: 0.243 4.414 0.793 2.426, LL -9582.4)"
    )
    print(
        f"Pareto/NBD fit (weeks): {describe(pnbd.params, pnbd.log_likelihood)}"
        " (published: 0.55 10.58 0.61 11.67, LL -9595.0)"
    )
    from_file = model_scores(weeks, bg.params, pnbd.params, WEEK)
    print_aucs(f"from the file, {repeat.size} customers", from_file, no_purchase, repeat)
    print("references (all customers): " + ", ".join(f"{k} {v}" for k, v in REFERENCES.items()))

    states, model, rejected = asyncio.run(replay_through_the_service(purchases))
    days = pattern_summary(states)
    labels = np.array([state.customer_id not in buyers_later for state in states])
    repeat_ids = {c for c, n in zip(calibration.customers, calibration.x, strict=True) if n > 0}
    repeat_mask = np.array([state.customer_id in repeat_ids for state in states])
    assert model.source == "fit"
    assert model.customers == len(states)
    # The bench reads the patterns as the service's `score` does: check that on its model.
    for horizon in HORIZONS:
        served = [score(state, model.params, CALIBRATION_END, horizon) for state in states]
        np.testing.assert_allclose(
            np.array([result.p_no_purchase_within for result in served if result is not None]),
            pareto.p_no_purchase_within(model.params, *days, horizon),
            rtol=1e-12,
        )
    # BG/NBD fitted on the stored patterns for comparison, in days, on the same customers.
    service_bg = btyd.fit_bg_nbd(*days, initial=btyd.BgNbdParams(0.243, 4.414 * WEEK, 0.793, 2.426))
    assert model.log_likelihood is not None
    print(
        f"\nthrough the service: {len(states)} customers stored, {rejected} purchase rows "
        "rejected by the API (zero-dollar rows: amount must be > 0)"
    )
    print(f"Pareto/NBD, the service's refit (days): {describe(model.params, model.log_likelihood)}")
    print(
        "BG/NBD on the stored patterns (days): "
        f"{describe(service_bg.params, service_bg.log_likelihood)}"
    )
    through_service = model_scores(days, service_bg.params, model.params, 1.0)
    print_aucs("through the service's stored patterns", through_service, labels, repeat_mask)
    for name in (f"{model} P(no purchase within {API_HORIZON} days)" for model in MODELS):
        auc = roc_auc(through_service[name], labels)
        verdict = "PASS" if auc >= QUALITY_BAR else "MISS"
        print(f"quality bar (AUC all >= {QUALITY_BAR}): {name} {auc:.4f} {verdict}")

    stored = {state.customer_id for state in states}
    same = np.array([c in stored for c in calibration.customers])
    print_aucs(
        f"from the file, the {int(same.sum())} customers the service stored",
        {name: values[same] for name, values in from_file.items()},
        no_purchase[same],
        repeat[same],
    )


if __name__ == "__main__":
    main()
