"""The terminal side of `radar import`: options, the progress bar, and the summary."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import httpx
import orjson
from tqdm import tqdm

from app.imports.reader import ReadOptions, check_columns, detect_format, parse_mapping
from app.imports.service import (
    ImportSummary,
    Progress,
    RemoteError,
    check_sample,
    import_local,
    import_remote,
)
from app.ingestion.schemas import EventLimits
from app.kit.cli_database import open_database
from app.kit.db import open_transactions, utcnow
from app.kit.settings import get_settings
from app.kit.text import spreadsheet_text

SHOWN_REJECTS = 10


def read_options(
    file_format: str | None,
    mapping: str,
    delimiter: str,
    decimal: str,
    no_header: bool,
    columns: str,
    date_format: str | None,
    timezone: str,
    default_store: str | None,
    default_currency: str | None,
    encoding: str,
) -> ReadOptions:
    try:
        fields = parse_mapping(mapping)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--map") from exc
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise click.BadParameter(
            f"unknown time zone {timezone!r}", param_hint="--timezone"
        ) from exc
    names = tuple(c.strip() for c in columns.split(",") if c.strip())
    if no_header and not names:
        raise click.UsageError("--no-header needs --columns")
    try:
        "".encode(encoding)
    except LookupError as exc:
        raise click.BadParameter(f"unknown encoding {encoding!r}", param_hint="--encoding") from exc
    return ReadOptions(
        format=cast(Any, file_format),
        mapping=fields,
        delimiter={"tab": "\t"}.get(delimiter, delimiter),
        decimal=decimal,
        header=not no_header,
        columns=names,
        date_format=date_format,
        timezone=timezone,
        default_store=default_store,
        default_currency=default_currency,
        encoding=encoding,
    )


def run(
    path: Path, options: ReadOptions, *, url: str | None, key: str | None, sweep: bool
) -> ImportSummary:
    if options.format is None:
        try:
            detect_format(path)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    settings = get_settings()
    if url is None and options.default_currency is None:  # the one currency amounts are in
        options = dataclasses.replace(options, default_currency=settings.currency)
    try:  # a wrong mapping stops here, before anything is stored
        check_columns(path, options)
        check_sample(path, options, None if url is not None else EventLimits.of(settings))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if url is None:
        open_database(settings)
    size = path.stat().st_size
    with tqdm(
        total=size, unit="B", unit_scale=True, desc=path.name, file=sys.stderr, disable=None
    ) as bar:
        started = time.monotonic()

        def progress(rows: int, position: int) -> None:
            bar.update(position - bar.n)
            rate = rows / max(time.monotonic() - started, 1e-9)
            bar.set_postfix_str(f"{rows:,} rows, {rate:,.0f} rows/s", refresh=False)

        try:
            if url is not None:
                assert key is not None
                return asyncio.run(import_remote(url, key, path, options, progress=progress))
            return asyncio.run(_local(path, options, progress, sweep))
        except ValueError as exc:  # the file as a whole is unreadable (no header, say)
            raise click.ClickException(str(exc)) from exc
        except httpx.TransportError as exc:
            raise click.ClickException(
                f"cannot reach the service at {url} ({type(exc).__name__}: "
                f"{' '.join(str(exc).split()) or 'no answer'}): is it running, and is --url right?"
            ) from exc
        except RemoteError as exc:
            raise click.ClickException(_refusal(exc, url)) from exc


def _refusal(exc: RemoteError, url: str | None) -> str:
    if exc.status == 401:
        return (
            f"the service at {url} does not know the key (401): it is mistyped, revoked, or "
            "from another database (`radar keys list` on the service's database)"
        )
    if exc.status == 403:
        return (
            f"the key lacks the ingest scope (403 from {url}): create one with "
            "`radar keys create --name NAME --scope ingest`"
        )
    return f"the service at {url} answered {exc.status}: {exc.detail}"


def check_outcome(summary: ImportSummary) -> None:
    """A file none of whose rows could be stored is a failure (exit 1), not a summary."""
    if summary.rows and not summary.accepted and not summary.duplicates:
        first = summary.rejects[0]
        where = f" {first.pointer.lstrip('/')}" if first.pointer else ""
        raise click.ClickException(
            f"all {summary.rows} rows were rejected, nothing was imported "
            f"(line {first.line}{where}: {first.message}); check --map, --date-format "
            "and --decimal"
        )


async def _local(
    path: Path, options: ReadOptions, progress: Progress, sweep: bool
) -> ImportSummary:
    from app.alerts.service import Evaluator
    from app.alerts.service import sweep as sweep_due

    settings = get_settings()
    async with open_transactions(settings) as transactions:
        summary = await import_local(
            transactions,
            path,
            options,
            max_future_skew=settings.max_future_skew,
            limits=EventLimits.of(settings),
            progress=progress,
        )
        if sweep:
            evaluator = Evaluator(escalate_after=settings.alert_escalate_after)
            result = await sweep_due(
                transactions,
                evaluator,
                utcnow,
                batch_size=settings.sweep_batch_size,
                max_batches=1_000_000,
            )
            click.echo(f"evaluated {result.customers} customers", err=True)
        return summary


def report(summary: ImportSummary, rejects: Path | None, as_json: bool) -> None:
    if rejects is not None:
        with rejects.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["line", "event_id", "field", "code", "message", "row"])
            for r in summary.rejects:
                event_id = None if r.event_id is None else spreadsheet_text(r.event_id)
                raw = spreadsheet_text(r.raw)  # (the line as read: a formula if it says so)
                writer.writerow([r.line, event_id, r.pointer, r.code, r.message, raw])
    if as_json:
        body = summary.as_dict() | {
            "rejects": [
                {"line": r.line, "field": r.pointer, "code": r.code, "message": r.message}
                for r in summary.rejects
            ]
        }
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    rate = summary.rows / summary.seconds if summary.seconds else 0.0
    click.echo(
        f"{summary.rows} rows in {summary.seconds:.1f} s ({rate:,.0f} rows/s): "
        f"{summary.accepted} accepted, {summary.duplicates} duplicates, "
        f"{summary.rejected} rejected"
    )
    for r in summary.rejects[:SHOWN_REJECTS]:
        where = f" {r.pointer.lstrip('/')}" if r.pointer else ""
        click.echo(f"  line {r.line}{where}: {r.message} [{r.code}]")
    if summary.rejected > SHOWN_REJECTS:
        hint = f"all in {rejects}" if rejects else "--rejects FILE writes them all"
        click.echo(f"  ... and {summary.rejected - SHOWN_REJECTS} more ({hint})")
