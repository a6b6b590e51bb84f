"""The command-line options that say how to read a history file (import and backtest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option(
        "--format", "file_format", type=click.Choice(["csv", "jsonl"]), default=None,
        help="Default: from the name (.csv/.tsv/.txt, .jsonl/.ndjson; .gz allowed)",
    ),
    click.option(
        "--map", "mapping", default="", metavar="FIELD=COLUMN,...",
        help="Columns for the event fields, e.g. customer_id=card,occurred_at=date",
    ),
    click.option(
        "--delimiter", default=",", show_default=True,
        help="CSV delimiter; 'tab', or 'whitespace' for runs of spaces",
    ),
    click.option(
        "--decimal", type=click.Choice([".", ","]), default=".", show_default=True,
        help="The amounts' decimal mark: ',' reads 42,50 as 42.50 (then points group "
        "thousands; a CSV needs another --delimiter, e.g. ';')",
    ),
    click.option("--no-header", is_flag=True, help="The CSV has no header row (give --columns)"),
    click.option("--columns", default="", help="Column names of a CSV without a header"),
    click.option(
        "--date-format", default=None,
        help="yyyymmdd, yyyy-mm-dd, dd/mm/yyyy, mm/dd/yyyy or a strftime pattern "
        "(default: ISO 8601)",
    ),
    click.option(
        "--timezone", default="UTC", show_default=True,
        help="For dates and times without an offset",
    ),
    click.option("--store", "default_store", default=None, help="store_id of rows without one"),
    click.option(
        "--currency", "default_currency", default=None,
        help="Currency of rows without one (default for a local import: RADAR_CURRENCY)",
    ),
    click.option("--encoding", default="utf-8", show_default=True),
]  # fmt: skip


def reader_options(command: F) -> F:
    """Add the reading options; `app.imports.cli.read_options(**them)` builds ReadOptions."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command
