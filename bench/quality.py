"""Defection-score quality on the CDNOW sample: ROC AUC for "no purchase in the holdout".

Fit on purchases up to 1997-09-30 (39 weeks), score as of that day, and check who made no
purchase from 1997-10-01 to 1998-06-30 (39 weeks). Reference AUCs on all 2,357 customers:
BG/NBD 0.757, MBG/NBD 0.760, Pareto/NBD 0.770, weeks since last purchase 0.771.

Two ways to the same customers: straight from the file (the textbook computation), and
through the service: the calibration purchases are posted to the real ingestion API
(in-process ASGI, a throw-away SQLite file), the population model is refitted as the service
does, and every customer is scored from the service's own stored pattern.

Run: .venv/bin/python bench/quality.py
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.stats import rankdata

from app.scoring import btyd
from app.scoring.history import summarise

DATA = Path(__file__).resolve().parent / "data" / "CDNOW_sample.txt"
CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_END = date(1998, 6, 30)
WEEK = 7.0
REFERENCES = {"BG/NBD": 0.757, "MBG/NBD": 0.760, "Pareto/NBD": 0.770, "weeks since last": 0.771}


def roc_auc(score: NDArray[np.float64], positive: NDArray[np.bool_]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    ranks = rankdata(score)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def load() -> list[tuple[str, date, str]]:
    """(customer, day, dollars) per purchase."""
    rows = (line.split() for line in DATA.read_text().splitlines())
    return [(row[0], datetime.strptime(row[2], "%Y%m%d").date(), row[4]) for row in rows]


async def replay_through_the_service(
    purchases: list[tuple[str, date, str]], horizons: dict[str, int]
) -> tuple[list[str], dict[str, NDArray[np.float64]], int]:
    """Post the calibration purchases to the API, refit, and score every stored customer."""
    import httpx
    from asgi_lifespan import LifespanManager

    from app.customers.repository import get_state
    from app.keys.service import create_key
    from app.kit.auth import Scope
    from app.kit.db import unit_of_work
    from app.kit.settings import Settings
    from app.main import create_app
    from app.scoring.service import current_model, refit, score

    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(
            database_url=f"sqlite:///{directory}/quality.db",
            sqlite_synchronous="NORMAL",
            refit_interval=timedelta(0),
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
    known = [(c, s) for c, s in zip(customers, states, strict=True) if s is not None]
    scores: dict[str, list[float]] = {name: [] for name in horizons}
    for _, state in known:
        for name, horizon in horizons.items():
            result = score(state, model.params, CALIBRATION_END, horizon)
            assert result is not None
            value = (
                -result.expected_purchases if name.startswith("-E") else result.p_no_purchase_within
            )
            scores[name].append(value)
    arrays = {name: np.array(values) for name, values in scores.items()}
    return [c for c, _ in known], arrays, rejected


def main() -> None:
    purchases = load()
    calibration = summarise(((c, day) for c, day, _ in purchases), CALIBRATION_END)
    buyers_later = {c for c, day, _ in purchases if CALIBRATION_END < day <= HOLDOUT_END}
    no_purchase = np.array([c not in buyers_later for c in calibration.customers])
    x, t_x, T = calibration.x, calibration.t_x / WEEK, calibration.T / WEEK
    horizon = (HOLDOUT_END - CALIBRATION_END).days / WEEK

    fit = btyd.fit_bg_nbd(x, t_x, T)
    scores = {
        "BG/NBD p(no purchase in holdout)": btyd.p_no_purchase_within(
            fit.params, x, t_x, T, horizon
        ),
        "weeks since last purchase": T - t_x,
    }
    p = fit.params
    print(
        f"CDNOW sample: {len(calibration.customers)} customers, {int(no_purchase.sum())} "
        f"made no purchase in the {horizon:.1f}-week holdout"
    )
    print(
        f"BG/NBD fit (weeks): r={p.r:.3f} alpha={p.alpha:.3f} a={p.a:.3f} b={p.b:.3f} "
        f"LL={fit.log_likelihood:.1f} (published: 0.243 4.414 0.793 2.426, LL -9582.4)"
    )
    repeat = x > 0
    print(f"{'score':38s} {'AUC all':>8s} {'AUC repeat':>11s}")
    for name, score in scores.items():
        print(
            f"{name:38s} {roc_auc(score, no_purchase):8.3f} "
            f"{roc_auc(score[repeat], no_purchase[repeat]):11.3f}"
        )
    print("references (all customers): " + ", ".join(f"{k} {v}" for k, v in REFERENCES.items()))

    horizon_days = (HOLDOUT_END - CALIBRATION_END).days
    service_scores = {
        "P(no purchase within 90 days)": 90,
        f"P(no purchase within {horizon_days} days)": horizon_days,
        "P(no purchase within 30 days)": 30,
        f"-E[purchases in {horizon_days} days]": horizon_days,
    }
    customers, scored, rejected = asyncio.run(replay_through_the_service(purchases, service_scores))
    labels = np.array([c not in buyers_later for c in customers])
    repeat_ids = {c for c, n in zip(calibration.customers, x, strict=True) if n > 0}
    repeat_mask = np.array([c in repeat_ids for c in customers])
    print(
        f"\nthrough the service: {len(customers)} customers stored, {rejected} purchase rows "
        "rejected by the API (zero-dollar rows: amount must be > 0)"
    )
    for name, values in scored.items():
        print(
            f"{name:38s} {roc_auc(values, labels):8.3f} "
            f"{roc_auc(values[repeat_mask], labels[repeat_mask]):11.3f}"
        )


if __name__ == "__main__":
    main()
