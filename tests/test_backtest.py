"""`radar backtest`: a small history judged by hand, the baselines beside the rules,
determinism, and the command line.

The replay makes its own throw-away SQLite database, so these tests need no app fixtures.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from app.backtest import baselines
from app.backtest.cli import backtest_command
from app.backtest.replay import Purchase, Replay, replay
from app.backtest.report import BaselineResult, Report, RuleResult, build
from app.imports.reader import ReadOptions, parse_mapping
from app.policy.schemas import Loyalty, PolicyBody

MONDAY = date(2024, 1, 1)  # day 0 of the history; 2024 is a leap year
# Only the inactivity rule, with the whole false-alarm budget (20 in 100: a significance of
# 0.2) and a floor of 21 silent days. At that budget the test alone would fire after 8 to 12
# silent days for the weekly and five-daily customers below, so the floor decides and every
# alert day follows from the visit days: the last visit + 21 days, or the day the customer
# has 50 days of tenure if that is later. The 30-daily customer's test needs about 50 silent
# days, more than the data has after their last visit.
POLICY: dict[str, Any] = {
    "horizon_days": 28,
    "loyalty": {"min_visits": 4, "min_tenure_days": 50},
    "false_alarms": {"per_100_customers": 20},
    "rules": {
        "inactivity": {"min_days": 21},
        "frequency_drop": {"enabled": False},
        "spend_drop": {"enabled": False},
        "category_lapse": {"enabled": False},
    },
}
OPTIONS = ReadOptions(
    mapping=parse_mapping("customer_id=card,occurred_at=date,amount=total"),
    date_format="yyyy-mm-dd",
    default_store="shop",
    default_currency="EUR",
)
READING = ["--map", "customer_id=card,occurred_at=date,amount=total"]
READING += ["--date-format", "yyyy-mm-dd", "--store", "shop", "--currency", "EUR"]


def every(first: date, last: date, days: int) -> list[date]:
    return [first + timedelta(days=n) for n in range(0, (last - first).days + 1, days)]


def history() -> list[tuple[str, list[date]]]:
    """The data ends on Monday 2024-04-29 (E); H = 28 days; loyal once 4 visit days and 50
    days since the first."""
    return [
        # Weekly from Jan 1 to Feb 5 (6 visits, gap 7; loyal from Feb 20): alerted after 21
        # silent days, on Feb 26. Really stopped (L = Feb 5, L + H = Mar 4 <= E): caught,
        # lead Mar 4 - Feb 26 = 7 days. Judgeable (Feb 26 + 28 = Mar 25 <= E), no purchase
        # after: right.
        ("stopper", every(date(2024, 1, 1), date(2024, 2, 5), 7)),
        # Weekly to the end (18 Mondays): never silent 14 days, never alerted; L + H > E.
        ("regular", every(date(2024, 1, 1), date(2024, 4, 29), 7)),
        # Weekly Jan 3 to Jan 31 (gap 7): silent 21 days on Feb 21, but loyal only from
        # Feb 22: alerted then; back on Mar 13, within (Feb 22, Mar 21]: a false alarm
        # (judgeable). Then weekly to Apr 24: L + H > E.
        (
            "pauser",
            every(date(2024, 1, 3), date(2024, 1, 31), 7)
            + every(date(2024, 3, 13), date(2024, 4, 24), 7),
        ),
        # Three visits: below the loyalty minimum of 4, never alerted and not counted as
        # stopped although silent since Feb 10.
        ("occasional", [date(2024, 1, 2), date(2024, 1, 20), date(2024, 2, 10)]),
        # Every 30 days, 4 visits to Mar 31: stopped (Mar 31 + 28 = Apr 28 <= E) but silent
        # only 29 days by the end, far short of what their rhythm makes unusual: missed.
        ("monthly", every(date(2024, 1, 1), date(2024, 3, 31), 30)),
        # Every 5 days, Mar 1 to Mar 26 (6 visits): silent 21 days on Apr 16, loyal from
        # Apr 20: alerted then, too recent to judge (Apr 20 + 28 > E). Stopped (Mar 26 + 28
        # = Apr 23 <= E): caught, lead Apr 23 - Apr 20 = 3 days.
        ("latecomer", every(date(2024, 3, 1), date(2024, 3, 26), 5)),
    ]


# The baselines on this history, by hand (the same loyalty; H = 28; one step a day):
#
# Recency at k: alert once silent k x the mean gap. Stopper (gap 7, last Feb 5), pauser (gap
# 7, last Jan 31 before the pause, back Mar 13) and latecomer (gap 5, last Mar 26) reach it
# for any k from 1 to 5.8, on the later of last + ceil(k x gap) and the day they are loyal.
# k = 2: stopper Feb 19 -> Feb 20 (lead Mar 4 - Feb 20 = 13, right), pauser Feb 14 -> Feb 22
#   (wrong), latecomer Apr 5 -> Apr 20 (too recent, lead 3): median lead 8.
# k = 3: stopper Feb 26 (lead 7, right), pauser Feb 21 -> Feb 22, latecomer Apr 10 -> Apr 20.
# Nobody else: the weekly visitors are never silent 7 days, the 30-daily customer is silent
# 29 days (k x 30 > 29 from k = 1) once loyal, the pauser's gaps are 10 to 14 days after the
# pause and the silences at most 6 days.
#
# Purchase count: visits in (d - 28, d] below half those in (d - 56, d - 28].
# stopper: on Feb 26, 1 (Feb 5) against 4 (Jan 8 to 29): alerted (right, lead 7).
# pauser: on Feb 21, 1 (Jan 31) against 4 (Jan 3 to 24), loyal on Feb 22: alerted (wrong).
# monthly: on Apr 28, 0 against 1 (Mar 31): alerted (too recent; lead Apr 28 - Apr 28 = 0).
# latecomer: on Apr 18, 1 (Mar 26) against 5 (Mar 1 to 21), loyal on Apr 20: alerted then
#   (too recent, lead 3).
# regular: always 4 in the last 28 days. Median lead of 7, 0 and 3: 3.
#
# The recency k with as many alerts as a target, by the counts above: 0.8 alerts the
# regular customer weekly; 0.9 adds the 30-daily customer (Mar 31 + 27 days) to the three;
# 1.0 to 5.8: three; 5.9 (41.3 days) misses the pauser, back after 41: two; 6.9 (34.5 days)
# misses the latecomer, silent 34 days by the end: one; 12.1 (84.7 days) misses the stopper.
MATCHED_K = {4: 0.9, 3: 1.0, 2: 5.9, 1: 6.9, 0: 12.1}


def write_history(directory: Path, rows: Iterable[str] = ()) -> Path:
    lines = ["card,date,total"]
    for customer, days in history():
        lines += [f"{customer},{day.isoformat()},10" for day in days]
    lines += list(rows)
    path = directory / "history.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


async def backtest(path: Path, policy: PolicyBody) -> Report:
    return build(await replay(path, OPTIONS, policy), file=path.name)


def measures(row: RuleResult) -> tuple[Any, ...]:
    return (
        row.alerts,
        row.judgeable,
        row.too_recent,
        row.true_positives,
        row.precision,
        row.caught,
        row.recall,
        row.median_lead_days,
    )


def by_name(report: Report) -> dict[str, BaselineResult]:
    return {row.rule: row for row in report.baselines}


def check_baselines(report: Report) -> None:
    """The hand-computed baselines above (they do not depend on the rules)."""
    rows = by_name(report)
    third = round(2 / 3, 4)
    assert measures(rows["recency_k2"]) == (3, 2, 1, 1, 0.5, 2, third, 8.0)
    assert measures(rows["recency_k3"]) == (3, 2, 1, 1, 0.5, 2, third, 5.0)
    assert measures(rows["purchase_count"]) == (4, 2, 2, 1, 0.5, 3, 1.0, 3.0)
    assert (rows["recency_k2"].k, rows["recency_k3"].k) == (2.0, 3.0)
    assert rows["purchase_count"].window_days == 28
    # No value model: no value at risk.
    assert all(r.value_at_risk is None for r in report.baselines)


@pytest.mark.anyio
async def test_a_small_history_judged_by_hand(tmp_path: Path) -> None:
    path = write_history(tmp_path, ["bad,2024-01-03,ten"])
    report = await backtest(path, PolicyBody.model_validate(POLICY))
    # 6 + 18 + 12 + 3 + 4 + 6 = 49 good rows and one without a number for an amount.
    assert (report.events_read, report.accepted, report.rejected) == (50, 49, 1)
    assert [(r.line, r.field, r.code) for r in report.rejects] == [(51, "amount", "bad_amount")]
    assert report.reject_reasons == {"amount: bad_amount": 1}
    assert (report.customers, report.first_day, report.last_day) == (6, "2024-01-01", "2024-04-29")
    assert report.days_replayed == 120  # Jan 31 + Feb 29 + Mar 31 + Apr 29
    # Eligible: all but "occasional"; stopped: stopper, monthly, latecomer.
    assert (report.eligible_customers, report.stopped, report.horizon_days) == (5, 3, 28)
    inactivity, *others, overall = report.rules
    assert inactivity.rule == "inactivity"
    assert all(r.alerts == 0 and not r.enabled for r in others)
    for row in (inactivity, overall):
        # Alerts: pauser (Feb 22), stopper (Feb 26), latecomer (Apr 20, too recent).
        assert (row.alerts, row.judgeable, row.too_recent) == (3, 2, 1)
        assert (row.true_positives, row.precision) == (1, 0.5)  # stopper right, pauser not
        assert (row.caught, row.recall) == (2, round(2 / 3, 4))  # stopper, latecomer of 3
        assert row.median_lead_days == 5.0  # median of 7 and 3
    weeks = {w.week: w.alerts["inactivity"] for w in report.weeks if sum(w.alerts.values())}
    assert weeks == {"2024-02-19": 1, "2024-02-26": 1, "2024-04-15": 1}
    assert len(report.weeks) == 18  # every week of the replay, empty ones too
    # The value at risk as announced: every alert's, and of the one that was right.
    assert overall.value_at_risk is not None
    assert overall.value_at_risk_true_positives is not None
    assert 0 < float(overall.value_at_risk_true_positives) < float(overall.value_at_risk)


@pytest.mark.anyio
async def test_the_baselines_run_beside_the_rules_on_the_same_replay(tmp_path: Path) -> None:
    report = await backtest(write_history(tmp_path), PolicyBody.model_validate(POLICY))
    check_baselines(report)
    names = [row.rule for row in report.baselines]
    assert names == ["recency_k2", "recency_k3", "recency_matched", "purchase_count"]
    # The matched k follows from however many alerts the inactivity rule raised (3 as the
    # rule stands, above), read off the counts by hand.
    inactivity, matched = report.rules[0], by_name(report)["recency_matched"]
    assert matched.k == MATCHED_K[inactivity.alerts]
    assert matched.alerts == inactivity.alerts
    assert "inactivity" in matched.definition


def hand_replay(policy: PolicyBody, *, step_days: int = 1) -> Replay:
    """The history above as a replay that raised no alert (no database: the baselines need
    only the purchases and the simulated days)."""
    purchases = [Purchase(customer, day) for customer, days in history() for day in days]
    steps = -(-120 // step_days)  # Jan 1 to Apr 29
    return Replay(
        policy,
        step_days,
        purchases=purchases,
        first_day=MONDAY,
        last_day=date(2024, 4, 29),
        steps=steps,
    )


def test_the_baselines_by_hand_without_a_replay() -> None:
    report = build(hand_replay(PolicyBody.model_validate(POLICY)), file="hand")
    check_baselines(report)
    # The inactivity rule raised nothing here: no k to match.
    assert [row.rule for row in report.baselines] == [
        "recency_k2",
        "recency_k3",
        "purchase_count",
    ]


def test_the_recency_k_matched_to_a_number_of_alerts() -> None:
    policy = PolicyBody.model_validate(POLICY)
    visits = {customer: days for customer, days in history()}
    days = baselines.Days(MONDAY, 1, 120)
    for target, k in MATCHED_K.items():
        assert baselines.matched_k(visits, days, policy.loyalty, target) == round(k * 10)
        opened = baselines.recency(visits, days, policy.loyalty, round(k * 10))
        assert sum(map(len, opened.values())) == target
    # More alerts than even k = 0.1 raises: the smallest k.
    assert baselines.matched_k(visits, days, policy.loyalty, 10_000) == 1


def test_the_baselines_open_on_the_last_day_of_a_step() -> None:
    # Steps of 7 days from Monday Jan 1: the simulated days are the Sundays, Jan 7 to May 5.
    report = build(hand_replay(PolicyBody.model_validate(POLICY), step_days=7), file="hand")
    rows = by_name(report)
    # Recency k = 2: stopper due Feb 20 -> Sun Feb 25 (lead Mar 4 - Feb 25 = 8), pauser
    # Feb 22 -> Feb 25 (back Mar 13: wrong), latecomer Apr 20 -> Sun Apr 21 (lead 2).
    assert measures(rows["recency_k2"]) == (3, 2, 1, 1, 0.5, 2, round(2 / 3, 4), 5.0)
    # Purchase count: stopper Feb 26 -> Mar 3 (lead 1), pauser Feb 22 -> Feb 25, latecomer
    # Apr 20 -> Apr 21 (lead 2), monthly Apr 28 (a Sunday; lead 0).
    assert measures(rows["purchase_count"]) == (4, 2, 2, 1, 0.5, 3, 1.0, 1.0)


def test_the_baselines_leave_the_already_lost_alone() -> None:
    # Recency at k = 5: the stopper is due 35 days after Feb 5 (Mar 11), the pauser on Mar 6
    # (back Mar 13), the latecomer 25 days after Mar 26 (Apr 20). Lost after 30 silent days:
    # only the latecomer is not lost by then.
    loyalty = {"min_visits": 4, "min_tenure_days": 50}
    visits = {customer: days for customer, days in history()}
    days = baselines.Days(MONDAY, 1, 120)
    patient = Loyalty.model_validate({**loyalty, "lost_after_days": None})
    impatient = Loyalty.model_validate({**loyalty, "lost_after_days": 30})
    assert baselines.recency(visits, days, patient, 50) == {
        "stopper": [date(2024, 3, 11)],
        "pauser": [date(2024, 3, 6)],
        "latecomer": [date(2024, 4, 20)],
    }
    assert baselines.recency(visits, days, impatient, 50) == {"latecomer": [date(2024, 4, 20)]}


def day_by_day(
    visits: list[date], days: list[date], loyalty: Loyalty, firing: Callable[[int, date], bool]
) -> list[date]:
    """The alerts a baseline opens, evaluated on every simulated day in turn."""
    opened: list[date] = []
    is_open = False
    for day in days:
        known = sum(visit <= day for visit in visits)
        if known == 0:
            continue
        silent = (day - visits[known - 1]).days
        eligible = (
            known >= loyalty.min_visits
            and (day - visits[0]).days >= loyalty.min_tenure_days
            and (loyalty.lost_after_days is None or silent <= loyalty.lost_after_days)
        )
        fires = firing(known, day)
        if fires and eligible and not is_open:
            opened.append(day)
        is_open = fires and (is_open or eligible)
    return opened


def test_the_baselines_agree_with_an_evaluation_of_every_day() -> None:
    """They jump from one change to the next; a plain walk over the days must agree."""
    rng = random.Random(7)
    for _ in range(200):
        step_days, steps = rng.choice((1, 1, 3, 7)), rng.randint(20, 80)
        horizon = rng.choice((7, 28, 30))
        days = baselines.Days(MONDAY, step_days, steps)
        simulated = [MONDAY + timedelta(days=(i + 1) * step_days - 1) for i in range(steps)]
        loyalty = Loyalty(
            min_visits=rng.randint(1, 5),
            min_tenure_days=rng.choice((0, 30, 60)),
            lost_after_days=rng.choice((None, 30, 60)),
        )
        span = steps * step_days
        visits = sorted({MONDAY + timedelta(days=rng.randrange(span)) for _ in range(12)})
        k_tenths = rng.randint(5, 40)

        def silent_long(known: int, day: date, v: list[date] = visits, k: int = k_tenths) -> bool:
            last, gaps = v[known - 1], known - 1  # silent >= k / 10 x the mean gap
            return gaps > 0 and 10 * (day - last).days * gaps >= k * (last - v[0]).days

        def fewer(known: int, day: date, v: list[date] = visits, h: int = horizon) -> bool:
            window = timedelta(days=h)
            recent = sum(day - window < visit <= day for visit in v)
            before = sum(day - 2 * window < visit <= day - window for visit in v)
            return 2 * recent < before

        history = {"c": visits}
        expected = day_by_day(visits, simulated, loyalty, silent_long)
        assert baselines.recency(history, days, loyalty, k_tenths).get("c", []) == expected
        expected = day_by_day(visits, simulated, loyalty, fewer)
        assert baselines.count_drop(history, days, loyalty, horizon).get("c", []) == expected


@pytest.mark.anyio
async def test_a_longer_horizon_judges_fewer_alerts(tmp_path: Path) -> None:
    path = write_history(tmp_path)
    result = await replay(path, OPTIONS, PolicyBody.model_validate(POLICY))
    report = build(result, file=path.name, horizon_days=60)
    overall = report.overall
    # Only alerts opened by Feb 29 (E - 60) are judged: pauser's (back on Mar 13, within
    # 60 days) and stopper's. Stopped: L + 60 <= E only for stopper (Feb 5), who was caught
    # on Feb 26, lead Apr 5 - Feb 26 = 39 days.
    assert (overall.judgeable, overall.true_positives, report.stopped) == (2, 1, 1)
    assert (overall.caught, overall.median_lead_days) == (1, 39.0)
    # The purchase-count baseline compares windows of 60 days. The stopper's recent window
    # loses a visit every Friday from Mar 1: on Mar 29 it holds 1 (Feb 5) against 5 (Jan 1
    # to 29) before: alerted, too recent to judge now (Mar 29 + 60 > E), caught with a lead
    # of Apr 5 - Mar 29 = 7 days. Nobody else: the pauser's windows hold at best 3 against
    # 5 (on Mar 31), the monthly customer's 2 against 2, the others' recent ones are full.
    count = by_name(report)["purchase_count"]
    assert count.window_days == 60
    assert measures(count) == (1, 0, 1, 0, None, 1, 1.0, 7.0)


def test_the_same_history_and_policy_give_the_same_report(tmp_path: Path) -> None:
    path = write_history(tmp_path, ["bad,2024-01-03,ten"])
    runner = CliRunner()
    runs = [runner.invoke(backtest_command, [str(path), *READING, "--json"]) for _ in range(2)]
    assert [run.exit_code for run in runs] == [0, 0], runs[0].output
    assert runs[0].stdout == runs[1].stdout
    report = orjson.loads(runs[0].stdout)
    assert report["horizon_days"] == 90  # the built-in policy's
    assert report["rejected"] == 1
    names = [row["rule"] for row in report["baselines"]]
    assert names[:2] == ["recency_k2", "recency_k3"]
    assert names[-1] == "purchase_count"
    assert report["baselines"][-1]["window_days"] == 90
    assert report["baselines"][-1]["value_at_risk"] is None


def test_the_command_prints_a_table_and_draws_a_chart(tmp_path: Path) -> None:
    path = write_history(tmp_path)
    (tmp_path / "policy.json").write_bytes(orjson.dumps(POLICY))
    chart = tmp_path / "alerts.html"
    arguments = [str(path), *READING, "--policy", str(tmp_path / "policy.json")]
    result = CliRunner().invoke(backtest_command, [*arguments, "--chart", str(chart)])
    assert result.exit_code == 0, result.output
    assert "inactivity" in result.stdout
    assert "50.0%" in result.stdout  # the precision
    table = result.stdout.splitlines()
    # The baselines under the rules, in the same columns; no value at risk.
    count = next(line for line in table if line.startswith("  purchase count"))
    columns = ["4", "2", "2", "1", "50.0%", "3", "100.0%", "3", "-", "-"]
    assert count.split() == ["purchase", "count", *columns]
    assert any(line.startswith("  recency k=2 ") for line in table)
    page = chart.read_text()
    assert "<svg" in page
    assert "purchase count" in page
    assert "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_a_bad_policy_file_is_refused_with_the_field(tmp_path: Path) -> None:
    path = write_history(tmp_path)
    (tmp_path / "policy.json").write_text('{"horizon_days": 1}')
    arguments = [str(path), *READING, "--policy", str(tmp_path / "policy.json")]
    result = CliRunner().invoke(backtest_command, arguments)
    assert result.exit_code == 2
    assert "horizon_days" in result.output
