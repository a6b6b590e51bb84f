"""`radar`: serve, migrate, keys, import, scores, backtest, demo, dispatch, the OpenAPI document."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession

from app.backtest.cli import backtest_command
from app.imports.options import reader_options
from app.kit.auth import Scope
from app.kit.cli_database import database_name, open_database, say_database
from app.kit.cli_errors import RadarGroup
from app.kit.db import (
    TransactionRunner,
    create_engine,
    create_sessionmaker,
    open_transactions,
    unit_of_work,
)
from app.kit.migrations import upgrade
from app.kit.settings import get_settings
from app.synthetic.command import demo_command

T = TypeVar("T")


def _with_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one unit of work on the configured database, then say which it was."""
    settings = get_settings()
    open_database(settings)

    async def run() -> T:
        engine = create_engine(settings)
        try:
            if settings.migrate_on_start:
                await upgrade(engine)
            async with unit_of_work(create_sessionmaker(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    result = asyncio.run(run())
    say_database()
    return result


def _with_transactions(work: Callable[[TransactionRunner], Awaitable[T]], *, say: bool = True) -> T:
    """Run `work` against the configured database, migrated first unless disabled; then say
    which database it was (a command that runs until stopped says it as it starts)."""
    settings = get_settings()
    open_database(settings)

    async def run() -> T:
        async with open_transactions(settings) as transactions:
            return await work(transactions)

    result = asyncio.run(run())
    if say:
        say_database()
    return result


@click.group(cls=RadarGroup)
@click.version_option(package_name="defection-radar", prog_name="radar")
def main() -> None:
    """Defection Radar: know which customers are drifting away while you can win them back."""


KEEP_ALIVE_SECONDS = 75


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int)
def serve(host: str, port: int, workers: int) -> None:
    """Run the HTTP service (applies pending migrations first unless RADAR_MIGRATE_ON_START=0)."""
    import uvicorn

    from app.kit.server import DeadlineProtocol

    settings = get_settings()
    if settings.is_sqlite and workers > 1:
        raise click.UsageError("SQLite is single-node: use PostgreSQL to run several workers")
    if settings.policy_file is not None:
        from app.policy.service import read_file

        read_file(settings.policy_file)  # a bad file: one line here, not a start-up traceback
    click.echo(f"database: {open_database(settings, creates=True)}", err=True)
    uvicorn.run(
        "app.main:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace.total_seconds())),
        # Idle connections are kept longer than clients' pools and load balancers keep them
        # (httpx 5 s, AWS ALB 60 s): at uvicorn's 5 s, a request sent on a connection as the
        # server closed it was reset (seen in bench/soak.py under load).
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        http=DeadlineProtocol,  # httptools, with header and body deadlines
        log_config=None,
    )


@main.command()
def migrate() -> None:
    """Apply pending database migrations (a new SQLite file is created)."""
    settings = get_settings()
    open_database(settings, creates=True)

    async def run() -> None:
        engine = create_engine(settings)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    click.echo("database schema is current")
    say_database()


@main.command()
def rebuild() -> None:
    """Recompute every customer's pattern from the stored events (one transaction)."""
    from app.pipeline import rebuild as rebuild_patterns

    customers = _with_transactions(lambda transactions: transactions.run(rebuild_patterns))
    click.echo(f"rebuilt the patterns of {customers} customers")


@main.command()
def sweep() -> None:
    """Evaluate now every customer whose next check has come (the service does it every
    RADAR_SWEEP_INTERVAL); prints how many were evaluated."""
    from app.alerts.service import Evaluator
    from app.alerts.service import sweep as sweep_due
    from app.kit.db import utcnow

    settings = get_settings()
    result = _with_transactions(
        lambda transactions: sweep_due(
            transactions,
            Evaluator(escalate_after=settings.alert_escalate_after),
            utcnow,
            batch_size=settings.sweep_batch_size,
        )
    )
    click.echo(f"evaluated {result.customers} due customers in {result.batches} batches")


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@reader_options
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the rejected rows here (CSV: line, reason, the row)",
)
@click.option("--url", default=None, help="Post to a running service's batch endpoint instead")
@click.option(
    "--key",
    envvar="RADAR_KEY",
    default=None,
    help="API key with the ingest scope, for --url (or RADAR_KEY)",
)
@click.option(
    "--sweep",
    is_flag=True,
    help="Evaluate the imported customers now (otherwise the service's sweeper does)",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON")
def import_command(
    file: Path,
    rejects: Path | None,
    url: str | None,
    key: str | None,
    sweep: bool,
    as_json: bool,
    **reader: Any,
) -> None:
    """Load purchase history from a CSV or JSON Lines file (gzip too).

    Rows go through the same validation and deduplication as the API: importing a file
    twice stores nothing new. Every row without an event_id gets a stable one.
    """
    from app.imports import cli as imports

    options = imports.read_options(**reader)
    if url is not None and key is None:
        raise click.UsageError("--url needs --key (or RADAR_KEY) with the ingest scope")
    summary = imports.run(file, options, url=url, key=key, sweep=sweep)
    imports.report(summary, rejects, as_json)
    imports.check_outcome(summary)
    say_database()  # (a local import's)


@main.command()
@click.option(
    "--as-of",
    "as_of",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="The day the scores are as of (default: today, UTC)",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The CSV file (default: stdout)",
)
def scores(as_of: datetime | None, out: Path | None) -> None:
    """Every customer's scores as of a day, as CSV (patterns rebuilt from the events up to
    that day; the current population model and policy)."""
    from app.kit.db import utcnow
    from app.scoring.export import export_scores

    day = as_of.date() if as_of else utcnow().date()
    handle = out.open("w", newline="", encoding="utf-8") if out else sys.stdout
    try:
        count = _with_transactions(
            lambda transactions: transactions.read(lambda c: export_scores(c, day, handle))
        )
    finally:
        if out:
            handle.close()
    click.echo(f"scored {count} customers as of {day}", err=True)


@main.command()
@click.option("--once", is_flag=True, help="Send what is due now, then exit")
def dispatch(once: bool) -> None:
    """Deliver webhooks: a dispatcher on its own, until SIGTERM or Ctrl-C.

    The service runs one too (RADAR_WEBHOOK_DISPATCHER); on PostgreSQL any number may run
    at once. On shutdown sends in flight finish (up to 10 s) or go back to the queue.
    """
    import signal

    from app.kit.logging import configure_logging
    from app.webhooks.dispatcher import Dispatcher

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    database = database_name(settings.database_url)

    async def run(transactions: TransactionRunner) -> None:
        dispatcher = Dispatcher(transactions, settings)
        if once:
            try:
                await dispatcher.run_until_idle()
            finally:
                await dispatcher.stop()
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, stop.set)
        dispatcher.start()
        click.echo(f"dispatching webhooks (database: {database})", err=True)
        await stop.wait()
        await dispatcher.stop()

    _with_transactions(run, say=once)


@main.command()
@click.option("--once", is_flag=True, help="Fold what is queued now, print how much, and exit")
@click.option(
    "--sweep",
    "with_sweeper",
    is_flag=True,
    help="Run the sweeper here too, every RADAR_SWEEP_INTERVAL (then set it to 0 on the API)",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve this process's Prometheus metrics (the scorer's lag and backlog) on this port",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
def score(once: bool, with_sweeper: bool, metrics_port: int | None, metrics_host: str) -> None:
    """Fold, score and publish stored events: a scorer on its own, until SIGTERM or Ctrl-C.

    The service runs one too (RADAR_SCORER); several may run at once, on either database,
    each folding different customers. On shutdown the queue is folded for up to
    RADAR_SHUTDOWN_GRACE; what is left waits in the database for the next scorer.
    """
    import signal

    from prometheus_client import start_http_server

    from app import pipeline
    from app.alerts.service import Evaluator
    from app.alerts.service import sweep as sweep_due
    from app.kit.backlog import Backlog
    from app.kit.db import utcnow
    from app.kit.logging import configure_logging
    from app.kit.metrics import Metrics
    from app.kit.periodic import PeriodicJobs
    from app.pipeline import Scorer

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    database = database_name(settings.database_url)
    if with_sweeper and settings.sweep_interval.total_seconds() <= 0:
        raise click.UsageError("--sweep needs RADAR_SWEEP_INTERVAL above 0")

    async def run(transactions: TransactionRunner) -> None:
        evaluator = Evaluator(escalate_after=settings.alert_escalate_after)
        metrics = Metrics()
        backlog = Backlog(settings.scorer_max_backlog)
        metrics.scorer_pending.set_function(lambda: backlog.pending)
        if metrics_port is not None:
            start_http_server(metrics_port, metrics_host, registry=metrics.registry)
        scorer = Scorer(
            transactions,
            evaluator,
            utcnow,
            batch_size=settings.scorer_batch_size,
            idle_poll=settings.scorer_idle_poll,
            linger=settings.scorer_linger,
            listen_url=None if settings.is_sqlite else settings.database_url,
            metrics=metrics,
            backlog=backlog,
        )
        if once:
            folded = await scorer.drain()
            click.echo(f"scored {folded} events")
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, stop.set)
        scorer.start()
        jobs = PeriodicJobs()
        jobs.start_all(pipeline.periodic_jobs(transactions, backlog))
        if with_sweeper:
            jobs.start(
                settings.sweep_interval,
                "sweep-due-customers",
                lambda: sweep_due(
                    transactions,
                    evaluator,
                    utcnow,
                    batch_size=settings.sweep_batch_size,
                    should_stop=lambda: jobs.stopping,
                ),
            )
        what = "scoring events and sweeping" if with_sweeper else "scoring events"
        click.echo(f"{what} (database: {database})", err=True)
        await stop.wait()
        await asyncio.gather(
            scorer.stop(settings.shutdown_grace), jobs.stop(settings.shutdown_grace)
        )

    _with_transactions(run, say=once)


@main.command("refit")
def refit_command() -> None:
    """Fit the population model on every customer now, and keep it for scoring."""
    from app.kit.db import utcnow
    from app.scoring.service import MIN_CUSTOMERS_TO_FIT, refit

    fit = _with_transactions(lambda transactions: refit(transactions, utcnow().date()))
    if fit is None:
        click.echo(
            f"not enough customers to fit (need {MIN_CUSTOMERS_TO_FIT} with a visit): "
            "scores keep using the prior"
        )
        return
    click.echo(
        f"Pareto/NBD on {fit.customers} customers: r={fit.r:.4g} alpha={fit.alpha:.4g} "
        f"s={fit.s:.4g} beta={fit.beta:.4g} log-likelihood={fit.log_likelihood:.1f}"
        + ("" if fit.converged else " (did not converge)")
    )
    if fit.spend_p is None:
        click.echo("spend: too few repeat customers for Gamma-Gamma; each customer's mean is used")
    else:
        click.echo(
            f"Gamma-Gamma spend on {fit.spend_customers} repeat customers: p={fit.spend_p:.4g} "
            f"q={fit.spend_q:.4g} gamma={fit.spend_gamma:.4g}"
        )


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option("--name", required=True, help="Who or what uses the key, e.g. till-12")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice([s.value for s in Scope]),
    help="Repeat for several scopes",
)
def keys_create(name: str, scopes: tuple[str, ...]) -> None:
    """Print a new API key (it is shown only this once)."""
    from app.keys.service import create_key

    created = _with_session(lambda s: create_key(s, name, [Scope(x) for x in scopes]))
    click.echo(created.key)
    click.echo(
        f"# {created.prefix} '{created.name}' scopes={','.join(created.scopes)}: "
        "store it now, it cannot be shown again",
        err=True,
    )


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys")
def keys_list(include_revoked: bool) -> None:
    """List keys: prefix, name, scopes, last use."""
    from app.keys.service import list_keys

    for key in _with_session(lambda s: list_keys(s, include_revoked=include_revoked)):
        last_used = key.last_used_at.isoformat() if key.last_used_at else "never"
        state = " revoked" if key.revoked_at else ""
        click.echo(f"{key.prefix}\t{key.name}\t{','.join(key.scopes)}\t{last_used}{state}")


@keys.command("revoke")
@click.argument("key")
def keys_revoke(key: str) -> None:
    """Revoke a key: its prefix (rk_xxxxxxxx), the whole key, or its name (when one active
    key has it)."""
    from app.keys.service import revoke

    revoked = _with_session(lambda s: revoke(s, key))
    click.echo(f"revoked {revoked.prefix} '{revoked.name}'")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Default: stdout")
def openapi(out: Path | None) -> None:
    """Write the OpenAPI document generated from the app."""
    from app.openapi import render_openapi

    document = render_openapi()
    if out is None:
        click.echo(document, nl=False)
    else:
        out.write_text(document)


if __name__ == "__main__":
    main()


main.add_command(backtest_command)

main.add_command(demo_command)
