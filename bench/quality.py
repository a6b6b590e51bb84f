"""Defection-score quality on CDNOW: ROC AUC and calibration for "no purchase in the holdout".

First part, the CDNOW sample at one cut. Fit on purchases up to 1997-09-30 (39 weeks), score
as of that day, and check who made no purchase from 1997-10-01 to 1998-06-30 (39 weeks).
Reference AUCs on all 2,357 customers: BG/NBD 0.757, MBG/NBD 0.760, Pareto/NBD 0.770, weeks
since last purchase 0.771.

Two ways to the same customers: straight from the file (the textbook computation), and
through the service: the calibration purchases are posted to the real ingestion API
(in-process ASGI, a throw-away SQLite file), the population model is refitted as the service
does, and every customer is scored from the service's own stored pattern. BG/NBD is not
wired into the service: here it is fitted on the same stored patterns in days, and scored
from them, for comparison.

Every score is reported at every horizon in HORIZONS (7 to 273 days), so that no horizon is
picked after looking at the holdout. A last table scores from the file only the customers the
service stored, to tell the population's share of a gap from the service's.

Second part, several cuts and calibration. The sample and the full master file (23,570
customers, `bench/data/README.md`) are each replayed through the service in time slices: the
purchases up to each cut in CUTS (1997-06-30, 1997-09-30, 1997-12-31) are posted, the
service refits Pareto/NBD as of the cut (`refit`), and every stored customer is scored as
served (`score_many`). The outcome is no purchase from the day after the cut to 1998-06-30,
the end of the data (365, 273 and 181 days), or in the N days after it with `--holdout-days
N`. Per cut: the AUC on all customers and on repeat customers (x > 0 at the cut) of the
service's primary score, Pareto/NBD P(no purchase within 90 days) (the API's default
horizon), of the same probability with the horizon set to the holdout's length, and of
recency; then the calibration of that holdout-length probability, the only one that predicts
the outcome itself: mean predicted against observed share with no purchase per decile of the
score, and its Brier score against the base rate's (the observed share predicted for
everyone). The 90-day score is checked the same way against no purchase in the 90 days
after the cut. A summary table ends the run.

Run: .venv/bin/python bench/quality.py                      # both files: under a minute
     .venv/bin/python bench/quality.py --quick              # the sample only: about 7 s
     .venv/bin/python bench/quality.py --holdout-days 181   # equal holdouts after each cut
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gzip
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.stats import rankdata
from sqlalchemy import Connection

from app.customers.state import CustomerState
from app.scoring import btyd, pareto
from app.scoring.history import summarise
from app.scoring.service import PopulationModel, Scores, score_many

DATA_DIRECTORY = Path(__file__).resolve().parent / "data"
DATA = DATA_DIRECTORY / "CDNOW_sample.txt"
MASTER = DATA_DIRECTORY / "CDNOW_master.txt.gz"
CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_END = date(1998, 6, 30)  # the last day in both files
WEEK = 7.0
HOLDOUT_DAYS = (HOLDOUT_END - CALIBRATION_END).days  # 273
# Horizons of P(no purchase within H days), all reported: the API's default is 90.
HORIZONS = (7, 14, 30, 60, 90, 180, HOLDOUT_DAYS)
API_HORIZON = 90  # the default horizon_days of GET /v1/customers/{id}
MODELS = ("BG/NBD", "Pareto/NBD")
QUALITY_BAR = 0.771
REFERENCES = {"BG/NBD": 0.757, "MBG/NBD": 0.760, "Pareto/NBD": 0.770, "weeks since last": 0.771}
# The second part's cuts: a quarter, two quarters and three quarters after the last customer's
# first purchase (every customer in both files first bought in January-March 1997).
CUTS = (date(1997, 6, 30), CALIBRATION_END, date(1997, 12, 31))
DECILES = 10

Summary = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]


def roc_auc(score: NDArray[np.float64], positive: NDArray[np.bool_]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    ranks = rankdata(score)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def brier(predicted: NDArray[np.float64], outcome: NDArray[np.bool_]) -> float:
    """Mean squared difference between a probability and the 0/1 outcome it predicts."""
    return float(np.mean((predicted - outcome) ** 2))


def describe(params: btyd.BgNbdParams | pareto.ParetoNbdParams, log_likelihood: float) -> str:
    values = " ".join(f"{name}={value:.3f}" for name, value in asdict(params).items())
    return f"{values} LL={log_likelihood:.1f}"


def load(path: Path = DATA) -> list[tuple[str, date, str]]:
    """(customer, day, dollars) per purchase, in the file's order.

    The sample has five columns (customer, master file's customer, date, CDs, dollars), the
    gzipped master file a header line and four (customer, date, CDs, dollars).
    """
    if path.suffix == ".gz":
        with gzip.open(path, "rt") as file:
            lines = file.read().splitlines()[1:]
        customer, day, dollars = 0, 1, 3
    else:
        lines = path.read_text().splitlines()
        customer, day, dollars = 0, 2, 4
    days: dict[str, date] = {}
    purchases = []
    for line in lines:
        row = line.split()
        if row[day] not in days:
            days[row[day]] = datetime.strptime(row[day], "%Y%m%d").date()
        purchases.append((row[customer], days[row[day]], row[dollars]))
    return purchases


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The service as of a cut: every stored customer, the refitted model, rows refused so far."""

    states: list[CustomerState]
    model: PopulationModel
    rejected: int


async def replay_through_the_service(
    purchases: list[tuple[str, date, str]], cuts: Sequence[date]
) -> dict[date, Checkpoint]:
    """Post the purchases to the API up to each cut in turn, refit there, read every pattern.

    Each cut's patterns are read before any later purchase is posted, so they hold only what
    the service knew on that day.
    """
    import httpx
    from asgi_lifespan import LifespanManager

    from app.customers.repository import get_state
    from app.keys.service import create_key
    from app.kit.auth import Scope
    from app.kit.db import unit_of_work
    from app.kit.settings import Settings
    from app.main import create_app
    from app.scoring.service import current_model, refit

    def read_states(customers: list[str], connection: Connection) -> list[CustomerState | None]:
        return [get_state(connection, customer) for customer in customers]

    checkpoints = {}
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
            posted_to = date.min
            async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
                for cut in sorted(cuts):
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
                        if posted_to < day <= cut
                    ]
                    for start in range(0, len(events), 1000):
                        response = await client.post(
                            "/v1/purchases/batch",
                            json={"events": events[start : start + 1000]},
                            headers={"Authorization": f"Bearer {key}"},
                        )
                        rejected += response.json()["rejected"]
                    posted_to = cut
                    transactions = app.state.transactions
                    await refit(transactions, cut)
                    model = await transactions.read(current_model)
                    customers = sorted({customer for customer, day, _ in purchases if day <= cut})
                    states = await transactions.read(functools.partial(read_states, customers))
                    checkpoints[cut] = Checkpoint(
                        [state for state in states if state is not None], model, rejected
                    )
    return checkpoints


def pattern_summary(states: list[CustomerState], as_of: date = CALIBRATION_END) -> Summary:
    """(x, t_x, T) in days from stored patterns, read the way `service.score` reads them."""
    x, t_x, T = [], [], []
    for state in states:
        first, last = state.first_visit_on, state.last_visit_on
        assert first is not None
        assert last is not None
        x.append(max(state.visit_days - 1, 0))
        t_x.append((min(last, as_of) - first).days)
        T.append((as_of - first).days)
    return np.array(x, dtype=np.float64), np.array(t_x, dtype=np.float64), np.array(T, float)


def print_aucs(
    title: str,
    scores: dict[str, NDArray[np.float64]],
    no_purchase: NDArray[np.bool_],
    repeat: NDArray[np.bool_],
    width: int = 44,
) -> list[tuple[float, float]]:
    """Print each score's AUC on all customers and on repeat customers; return them."""
    print(f"\n{title}\n{'':{width}s} {'AUC all':>8s} {'AUC repeat':>11s}")
    aucs = []
    for name, values in scores.items():
        auc = (roc_auc(values, no_purchase), roc_auc(values[repeat], no_purchase[repeat]))
        print(f"{name:{width}s} {auc[0]:8.4f} {auc[1]:11.4f}")
        aucs.append(auc)
    return aucs


def model_scores(
    summary: Summary,
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


def sample_at_one_cut(purchases: list[tuple[str, date, str]], checkpoint: Checkpoint) -> None:
    """The first part: every score on the sample at 1997-09-30, from the file and as served."""
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

    states, model, rejected = checkpoint.states, checkpoint.model, checkpoint.rejected
    days = pattern_summary(states)
    labels = np.array([state.customer_id not in buyers_later for state in states])
    repeat_ids = {c for c, n in zip(calibration.customers, calibration.x, strict=True) if n > 0}
    repeat_mask = np.array([state.customer_id in repeat_ids for state in states])
    assert model.source == "fit"
    assert model.customers == len(states)
    # The bench reads the patterns as the service's `score` does: check that on its model.
    for horizon in HORIZONS:
        served = score_many(states, model.params, CALIBRATION_END, horizon)
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
        "rejected by the API"
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


@dataclass(frozen=True, slots=True)
class Calibration:
    """How a probability of no purchase compares with the outcome it predicts."""

    brier: float
    base: float  # the Brier score of the observed share, predicted for everyone
    mean_predicted: float
    observed: float
    largest_gap: float  # over the deciles, |mean predicted - observed share|


def calibration(predicted: NDArray[np.float64], outcome: NDArray[np.bool_]) -> Calibration:
    share = float(outcome.mean())
    gaps = [
        abs(float(predicted[group].mean() - outcome[group].mean())) for group in deciles(predicted)
    ]
    return Calibration(
        brier(predicted, outcome),
        brier(np.full(outcome.size, share), outcome),
        float(predicted.mean()),
        share,
        max(gaps),
    )


def deciles(predicted: NDArray[np.float64]) -> list[NDArray[np.intp]]:
    """Customers' indices in DECILES groups of (nearly) equal size, by increasing score."""
    return np.array_split(np.argsort(predicted, kind="stable"), DECILES)


def print_calibration(
    predicted: NDArray[np.float64], outcome: NDArray[np.bool_], repeat: NDArray[np.bool_]
) -> Calibration:
    """Per decile of the score, then on all, one-time (x = 0) and repeat (x > 0) customers."""
    print(
        f"{'decile':>6s}  {'score from-to':>13s}  {'mean predicted':>14s}  "
        f"{'observed share':>14s}  {'gap':>6s}  {'customers':>9s}"
    )
    for n, group in enumerate(deciles(predicted), start=1):
        p, y = predicted[group], outcome[group]
        print(
            f"{n:6d}  {p.min():6.3f}-{p.max():.3f}  {p.mean():14.3f}  {y.mean():14.3f}  "
            f"{p.mean() - y.mean():+6.3f}  {group.size:9,d}"
        )
    for name, members in (
        ("all", np.full(outcome.size, True)),
        ("x = 0", ~repeat),
        ("x > 0", repeat),
    ):
        p, y = predicted[members], outcome[members]
        print(
            f"{name:>6s}  {'':13s}  {p.mean():14.3f}  {y.mean():14.3f}  "
            f"{p.mean() - y.mean():+6.3f}  {int(members.sum()):9,d}"
        )
    result = calibration(predicted, outcome)
    print(
        f"Brier score {result.brier:.4f}; the base rate's ({result.observed:.3f} for everyone) "
        f"{result.base:.4f}: {1 - result.brier / result.base:.1%} lower"
    )
    return result


@dataclass(frozen=True, slots=True)
class CutResult:
    data: str
    cut: date
    holdout_days: int
    customers: int
    aucs: list[tuple[float, float]]  # (all, repeat): the 90-day score, the holdout's, recency
    holdout: Calibration  # P(no purchase within the holdout's length) against the holdout
    first_90_days: Calibration | None  # P(no purchase within 90 days) against those 90 days


def served(
    states: list[CustomerState], model: PopulationModel, as_of: date, horizon_days: int
) -> list[Scores]:
    results = score_many(states, model.params, as_of, horizon_days)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def no_purchase_after(
    purchases: list[tuple[str, date, str]], customers: list[str], cut: date, end: date
) -> NDArray[np.bool_]:
    """Per customer: made no purchase from the day after `cut` to `end`, both included."""
    buyers = {customer for customer, day, _ in purchases if cut < day <= end}
    return np.array([customer not in buyers for customer in customers])


def evaluate_cut(
    data: str,
    purchases: list[tuple[str, date, str]],
    checkpoint: Checkpoint,
    cut: date,
    end: date,
) -> CutResult:
    """The second part at one cut: AUCs of the served scores, then their calibration."""
    states, model = checkpoint.states, checkpoint.model
    customers = [state.customer_id for state in states]
    holdout_days = (end - cut).days
    first_day = cut + timedelta(days=1)
    print(f"\n== CDNOW {data}, cut {cut}: holdout {first_day} to {end} ({holdout_days} days) ==")
    # The stored patterns against the file's own summaries, customer by customer.
    from_file = summarise(((c, day) for c, day, _ in purchases), cut)
    expected = {
        customer: (x, t_x, T)
        for customer, x, t_x, T in zip(
            from_file.customers, from_file.x, from_file.t_x, from_file.T, strict=True
        )
    }
    stored = pattern_summary(states, cut)
    equal = sum(
        expected.get(customer) == (x, t_x, T)
        for customer, x, t_x, T in zip(customers, *stored, strict=True)
    )
    repeat = stored[0] > 0
    print(
        f"the service stored {len(states):,} of the file's {len(expected):,} customers "
        f"({int(repeat.sum()):,} repeat customers, x > 0), {checkpoint.rejected} purchase rows "
        f"rejected so far; {equal:,} stored patterns give the file's (x, t_x, T)"
    )
    assert model.log_likelihood is not None
    print(
        f"Pareto/NBD, the service's refit as of {cut} ({model.source}, days): "
        f"{describe(model.params, model.log_likelihood)}"
    )
    outcome = no_purchase_after(purchases, customers, cut, end)
    print(
        f"no purchase in the holdout: {int(outcome.sum()):,} of {outcome.size:,} "
        f"({outcome.mean():.1%}); repeat customers {int(outcome[repeat].sum()):,} of "
        f"{int(repeat.sum()):,} ({outcome[repeat].mean():.1%})"
    )
    primary = served(states, model, cut, API_HORIZON)
    at_holdout = served(states, model, cut, holdout_days)
    p_holdout = np.array([result.p_no_purchase_within for result in at_holdout])
    scores = {
        f"Pareto/NBD P(no purchase within {API_HORIZON} days), the API's default": np.array(
            [result.p_no_purchase_within for result in primary]
        ),
        f"Pareto/NBD P(no purchase within {holdout_days} days), the holdout": p_holdout,
        "time since last purchase": np.array(
            [result.days_since_last_visit for result in primary], dtype=np.float64
        ),
    }
    aucs = print_aucs("as served, higher = more likely no purchase", scores, outcome, repeat, 60)
    print(
        f"\ncalibration of Pareto/NBD P(no purchase within {holdout_days} days): its horizon "
        f"equals the holdout's length ({holdout_days} days), so it predicts the outcome itself\n"
        "(a probability over another horizon predicts another event: not calibrated against "
        "this one)"
    )
    holdout = print_calibration(p_holdout, outcome, repeat)
    first_90_days = None
    if cut + timedelta(days=API_HORIZON) <= HOLDOUT_END:
        window_end = cut + timedelta(days=API_HORIZON)
        result = calibration(
            scores[next(iter(scores))],
            no_purchase_after(purchases, customers, cut, window_end),
        )
        print(
            f"the API's default, P(no purchase within {API_HORIZON} days), against its own event, "
            f"no purchase from {first_day} to {window_end}: mean predicted "
            f"{result.mean_predicted:.3f}, observed {result.observed:.3f}, largest decile gap "
            f"{result.largest_gap:.3f}, Brier score {result.brier:.4f} against the base rate's "
            f"{result.base:.4f}"
        )
        first_90_days = result
    return CutResult(data, cut, holdout_days, len(states), aucs, holdout, first_90_days)


def print_summary(results: list[CutResult]) -> None:
    print(
        "\nsummary: AUC all / repeat customers, as served; calibration of P(no purchase within "
        "the holdout's length) against the holdout, and of the 90-day score against the 90 "
        "days after the cut\n"
        f"{'data':6s}  {'cut':10s}  {'holdout':>7s}  {'customers':>9s}  "
        f"{'P(90 d) AUC':>13s}  {'P(holdout) AUC':>14s}  {'recency AUC':>13s}  "
        f"{'predicted':>9s}  {'observed':>8s}  {'max gap':>7s}  {'Brier':>6s}  {'base':>6s}  "
        f"{'90 d: Brier':>11s}  {'base':>6s}"
    )
    for r in results:
        aucs = [f"{auc_all:.4f}/{auc_repeat:.4f}" for auc_all, auc_repeat in r.aucs]
        h, q = r.holdout, r.first_90_days
        short = "-" if q is None else f"{q.brier:11.4f}  {q.base:6.4f}"
        print(
            f"{r.data:6s}  {r.cut!s:10s}  {r.holdout_days:5d} d  {r.customers:9,d}  "
            f"{aucs[0]:>13s}  {aucs[1]:>14s}  {aucs[2]:>13s}  {h.mean_predicted:9.3f}  "
            f"{h.observed:8.3f}  {h.largest_gap:7.3f}  {h.brier:6.4f}  {h.base:6.4f}  {short}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="ROC AUC and calibration of the defection scores on CDNOW"
    )
    parser.add_argument(
        "--data",
        choices=("both", "sample", "master"),
        default="both",
        help="which file(s) to replay (default both; the first part needs the sample)",
    )
    parser.add_argument("--quick", action="store_true", help="the sample only: --data sample")
    parser.add_argument(
        "--cuts",
        type=lambda value: tuple(date.fromisoformat(cut) for cut in value.split(",")),
        default=CUTS,
        help="comma-separated cut days of the second part (default: "
        + ",".join(str(cut) for cut in CUTS)
        + ")",
    )
    parser.add_argument(
        "--holdout-days",
        type=int,
        default=None,
        help="holdouts of this many days after each cut (default: each to 1998-06-30)",
    )
    args = parser.parse_args()
    if args.quick:
        args.data = "sample"
    for cut in args.cuts:
        end = HOLDOUT_END if args.holdout_days is None else cut + timedelta(args.holdout_days)
        if not cut < end <= HOLDOUT_END:
            parser.error(f"the holdout after {cut} must end after it and by {HOLDOUT_END}")
    return args


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    files = {"sample": DATA, "master": MASTER}
    results = []
    for data, path in files.items():
        if args.data not in ("both", data):
            continue
        purchases = load(path)
        first_part = data == "sample"
        cuts = set(args.cuts) | ({CALIBRATION_END} if first_part else set())
        checkpoints = asyncio.run(replay_through_the_service(purchases, sorted(cuts)))
        if first_part:
            sample_at_one_cut(purchases, checkpoints[CALIBRATION_END])
            print("\n\nsecond part: the cuts, as served")
        for cut in args.cuts:
            days = args.holdout_days
            end = HOLDOUT_END if days is None else cut + timedelta(days)
            results.append(evaluate_cut(data, purchases, checkpoints[cut], cut, end))
    print_summary(results)
    print(f"\nran in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
