"""`radar backtest FILE`: the terminal side (options, progress, the table, JSON, the chart)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from app.imports.options import reader_options

if TYPE_CHECKING:  # the heavy modules load only when the command runs (`radar --help` is fast)
    from app.backtest.replay import Replay
    from app.imports.reader import ReadOptions
    from app.policy.schemas import PolicyBody


@click.command("backtest")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@reader_options
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A JSON policy, as PUT /v1/policy takes it (default: the built-in policy)",
)
@click.option(
    "--horizon",
    type=click.IntRange(1, 3650),
    default=None,
    help="Days a customer must stay away to count as lost (default: the policy's horizon_days)",
)
@click.option(
    "--step",
    type=click.IntRange(1, 366),
    default=1,
    show_default=True,
    help="Days per simulated step: events stored, then the sweeper run, once a step",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON")
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write an HTML page: a chart of the alerts per week by rule, and the measures of "
    "the rules and the baselines",
)
def backtest_command(
    file: Path,
    policy_file: Path | None,
    horizon: int | None,
    step: int,
    as_json: bool,
    chart: Path | None,
    **reader: Any,
) -> None:
    """Replay a purchase history under a policy, and report what it would have raised.

    The file is read like `radar import` reads it and replayed day by day, in the order the
    purchases happened, in a throw-away database: alerts open and resolve as they would
    have live. Each alert is then judged against what its customer did next: precision (no
    purchase within the horizon), recall and lead time (customers who really stopped, and
    how early they were flagged), value at risk. Two baselines on the same days are judged
    the same way beside the rules: recency (silent k times the customer's own mean gap, at
    k = 2, 3 and the k raising as many alerts as the inactivity rule) and purchase count
    (visits in the last horizon under half those of the horizon before).
    """
    from app.backtest import report as reports
    from app.imports.cli import read_options
    from app.imports.reader import detect_format
    from app.policy.schemas import PolicyBody
    from app.policy.service import PolicyFileError, read_file

    options = read_options(**reader)
    if options.format is None:
        try:
            detect_format(file)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    try:
        policy = read_file(policy_file) if policy_file is not None else PolicyBody()
    except PolicyFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--policy") from exc
    result = _replay(file, options, policy, step)
    report = reports.build(result, file=file.name, horizon_days=horizon)
    if chart is not None:
        chart.write_text(reports.chart(report), encoding="utf-8")
    if as_json:
        click.echo(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(reports.table(report))


def _replay(file: Path, options: ReadOptions, policy: PolicyBody, step: int) -> Replay:
    from tqdm import tqdm

    from app.backtest.replay import replay

    with tqdm(unit="day", desc="replaying", file=sys.stderr, disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total * step
            bar.update(done * step - bar.n)

        try:
            return asyncio.run(replay(file, options, policy, step_days=step, progress=progress))
        except ValueError as exc:  # the file as a whole is unreadable (no header, say)
            raise click.ClickException(str(exc)) from exc
