"""What a `radar` command says when it fails: one line on stderr and exit 1, never a
traceback. A person at a terminal can act on "RADAR_CURRENCY: not an ISO 4217 code" or "the
database is not reachable"; a traceback tells them nothing more and hides that line."""

from __future__ import annotations

import os
from typing import Any

import click
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from app.kit.cli_database import opened_database
from app.kit.errors import RadarError

TRACEBACK_VARIABLE = "RADAR_CLI_TRACEBACK"  # set to 1 to see the traceback after all


def one_line(exc: BaseException) -> str:
    """The error as a person should read it."""
    if isinstance(exc, ValidationError) and exc.title == "Settings":
        first = exc.errors(include_url=False)[0]
        name = "RADAR_" + "_".join(str(part) for part in first["loc"][:1]).upper()
        return f"configuration: {name}: {first['msg']}"
    if isinstance(exc, RadarError):
        return str(exc)
    if isinstance(exc, DBAPIError):
        return f"the database refused or could not be reached: {_flat(exc.orig)}"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return f"the database could not be reached: {_flat(exc)}"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or _flat(exc)}{where}"
    if isinstance(exc, ValueError):  # our own refusals (a policy file, a bad option value)
        return _flat(exc)
    return (
        f"unexpected error: {type(exc).__name__}: {_flat(exc)} "
        f"(set {TRACEBACK_VARIABLE}=1 to see where)"
    )


def _flat(exc: Any) -> str:
    return " ".join(str(exc).split())[:500]


# Errors that depend on which database a command opened: their line names it (a key "not
# found" may be in another database).
_ABOUT_DATA = (RadarError, DBAPIError, ConnectionError, TimeoutError)


class RadarGroup(click.Group):
    """The `radar` group: any error a command raises becomes one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get(TRACEBACK_VARIABLE) == "1":
                raise
            database = opened_database()
            where = f" (database: {database})" if database and isinstance(exc, _ABOUT_DATA) else ""
            raise click.ClickException(one_line(exc) + where) from None
