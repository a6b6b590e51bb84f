"""Defection-score quality on the CDNOW sample: ROC AUC for "no purchase in the holdout".

Fit on purchases up to 1997-09-30 (39 weeks), score as of that day, and check who made no
purchase from 1997-10-01 to 1998-06-30 (39 weeks). Reference AUCs on all 2,357 customers:
BG/NBD 0.757, MBG/NBD 0.760, Pareto/NBD 0.770, weeks since last purchase 0.771.

This first version computes the per-customer summary straight from the file. Replaying the
purchases through the ingestion API and scoring from the service's own customer state
comes with the streaming scorer.

Run: .venv/bin/python bench/quality.py
"""

from __future__ import annotations

from datetime import date, datetime
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


def load() -> list[tuple[str, date]]:
    rows = (line.split() for line in DATA.read_text().splitlines())
    return [(row[0], datetime.strptime(row[2], "%Y%m%d").date()) for row in rows]


def main() -> None:
    purchases = load()
    calibration = summarise(purchases, CALIBRATION_END)
    buyers_later = {c for c, day in purchases if CALIBRATION_END < day <= HOLDOUT_END}
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


if __name__ == "__main__":
    main()
