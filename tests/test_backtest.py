"""`radar backtest`: a small history judged by hand, determinism, and the command line.

The replay makes its own throw-away SQLite database, so these tests need no app fixtures.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from app.backtest.cli import backtest_command
from app.backtest.replay import replay
from app.backtest.report import Report, build
from app.imports.reader import ReadOptions, parse_mapping
from app.policy.schemas import PolicyBody

MONDAY = date(2024, 1, 1)  # day 0 of the history; 2024 is a leap year
# Only the inactivity rule, by the customer's own gap alone (no score), so that every alert
# day follows from the visit days: it fires once silent for max(14, ceil(3 x mean gap)) days.
POLICY: dict[str, Any] = {
    "horizon_days": 28,
    "loyalty": {"min_visits": 4, "min_tenure_days": 0},
    "rules": {
        "inactivity": {"score_threshold": None, "gap_multiple": 3, "min_days": 14},
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
    """The data ends on Monday 2024-04-29 (E); H = 28 days."""
    return [
        # Weekly from Jan 1 to Feb 5 (6 visits, gap 7): alerted after 21 silent days, on
        # Feb 26. Really stopped (L = Feb 5, L + H = Mar 4 <= E): caught, lead Mar 4 - Feb 26
        # = 7 days. Judgeable (Feb 26 + 28 = Mar 25 <= E), no purchase after: right.
        ("stopper", every(date(2024, 1, 1), date(2024, 2, 5), 7)),
        # Weekly to the end (18 Mondays): never silent 14 days, never alerted; L + H > E.
        ("regular", every(date(2024, 1, 1), date(2024, 4, 29), 7)),
        # Weekly Jan 3 to Jan 31 (gap 7): alerted on Feb 21; back on Mar 13, within
        # (Feb 21, Mar 20]: a false alarm (judgeable). Then weekly to Apr 24: L + H > E.
        (
            "pauser",
            every(date(2024, 1, 3), date(2024, 1, 31), 7)
            + every(date(2024, 3, 13), date(2024, 4, 24), 7),
        ),
        # Three visits: below the loyalty minimum of 4, never alerted and not counted as
        # stopped although silent since Feb 10.
        ("occasional", [date(2024, 1, 2), date(2024, 1, 20), date(2024, 2, 10)]),
        # Every 20 days, 4 visits to Mar 1: stopped (Mar 1 + 28 = Mar 29 <= E) but the rule
        # waits 60 days, to Apr 30, after the data: missed.
        ("monthly", every(date(2024, 1, 1), date(2024, 3, 1), 20)),
        # Every 5 days, Mar 1 to Mar 26 (6 visits): alerted after 15 days, on Apr 10, too
        # recent to judge (Apr 10 + 28 > E). Stopped (Mar 26 + 28 = Apr 23 <= E): caught,
        # lead Apr 23 - Apr 10 = 13 days.
        ("latecomer", every(date(2024, 3, 1), date(2024, 3, 26), 5)),
    ]


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
        # Alerts: pauser (Feb 21), stopper (Feb 26), latecomer (Apr 10, too recent).
        assert (row.alerts, row.judgeable, row.too_recent) == (3, 2, 1)
        assert (row.true_positives, row.precision) == (1, 0.5)  # stopper right, pauser not
        assert (row.caught, row.recall) == (2, round(2 / 3, 4))  # stopper, latecomer of 3
        assert row.median_lead_days == 10.0  # median of 7 and 13
    weeks = {w.week: w.alerts["inactivity"] for w in report.weeks if sum(w.alerts.values())}
    assert weeks == {"2024-02-19": 1, "2024-02-26": 1, "2024-04-08": 1}
    assert len(report.weeks) == 18  # every week of the replay, empty ones too
    # The value at risk as announced: every alert's, and of the one that was right.
    assert 0 < float(overall.value_at_risk_true_positives) < float(overall.value_at_risk)


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


def test_the_same_history_and_policy_give_the_same_report(tmp_path: Path) -> None:
    path = write_history(tmp_path, ["bad,2024-01-03,ten"])
    runner = CliRunner()
    runs = [runner.invoke(backtest_command, [str(path), *READING, "--json"]) for _ in range(2)]
    assert [run.exit_code for run in runs] == [0, 0], runs[0].output
    assert runs[0].stdout == runs[1].stdout
    report = orjson.loads(runs[0].stdout)
    assert report["horizon_days"] == 90  # the built-in policy's
    assert report["rejected"] == 1


def test_the_command_prints_a_table_and_draws_a_chart(tmp_path: Path) -> None:
    path = write_history(tmp_path)
    (tmp_path / "policy.json").write_bytes(orjson.dumps(POLICY))
    chart = tmp_path / "alerts.html"
    arguments = [str(path), *READING, "--policy", str(tmp_path / "policy.json")]
    result = CliRunner().invoke(backtest_command, [*arguments, "--chart", str(chart)])
    assert result.exit_code == 0, result.output
    assert "inactivity" in result.stdout
    assert "50.0%" in result.stdout  # the precision
    page = chart.read_text()
    assert "<svg" in page
    assert "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_a_bad_policy_file_is_refused_with_the_field(tmp_path: Path) -> None:
    path = write_history(tmp_path)
    (tmp_path / "policy.json").write_text('{"horizon_days": 1}')
    arguments = [str(path), *READING, "--policy", str(tmp_path / "policy.json")]
    result = CliRunner().invoke(backtest_command, arguments)
    assert result.exit_code == 2
    assert "horizon_days" in result.output
