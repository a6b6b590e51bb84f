"""Request parameters shared by routers: ids bounded to what the database can hold, and
times written as ISO 8601 within the years the service can compute with.

Ids are 64-bit integers in the database; a larger number in a path or query would fail in
the driver (a 500), so it is refused as a 422 naming the parameter instead. Dates and times
likewise: year 1 with an offset, or 9999 plus a report period, overflows Python's dates.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from fastapi import Path, Query, Request
from fastapi import params as fastapi_params
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, StringConstraints
from pydantic_core import PydanticCustomError

from app.kit.errors import FieldError, ValidationFailed, json_pointer

MAX_ROW_ID = 2**63 - 1

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
RowIdQuery = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)]
PageBefore = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID, description="A page's next_cursor")]

# Customer and store ids as the ingest takes them: no control characters (PostgreSQL cannot
# hold a NUL in text, and none of them belongs in an id).
IDENTIFIER_PATTERN = r"^[^\x00-\x1f\x7f]+$"
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=IDENTIFIER_PATTERN)
]

# Free text (notes, descriptions, names, categories): any character either database can hold,
# which is every one but NUL (PostgreSQL's text and JSONB refuse it; SQLite would keep it).
# Composes with a length: `Annotated[str, StringConstraints(max_length=2000), NoNul]`.
FREE_TEXT_PATTERN = r"^[^\x00]*$"
NoNul = StringConstraints(pattern=FREE_TEXT_PATTERN)


_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


def _iso_8601(value: Any) -> Any:
    """Pydantic would read a number, or a string of digits, as a Unix time: `?from=0` would
    mean 1970. Times are only taken as ISO 8601 / RFC 3339 strings."""
    if isinstance(value, date) or (isinstance(value, str) and not _NUMBER.match(value)):
        return value  # (a string that is not a number is then parsed, or refused, as ISO)
    raise PydanticCustomError(
        "timestamp_type",
        "must be an ISO 8601 date (2026-01-31) or date-time with a UTC offset "
        "(2026-01-31T18:05:00Z)",
    )


# Every date and time the API takes lies in [1970-01-01, 9000-01-01). Nothing the service
# keeps is older (events before 1970 are refused), and the ceiling leaves centuries of room
# for what is computed from a value (a report's periods, a score's horizon, the UTC instant
# of an offset) before Python's dates end with 9999: outside it a value is a 422 naming it,
# never an overflow deep inside (a 500).
EARLIEST_DATE = date(1970, 1, 1)
LATEST_DATE = date(9000, 1, 1)  # the first day refused
EARLIEST_TIME = datetime.combine(EARLIEST_DATE, time(), UTC)
LATEST_TIME = datetime.combine(LATEST_DATE, time(), UTC)


def _bounded_date(value: date) -> date:
    if value < EARLIEST_DATE:
        raise PydanticCustomError("timestamp_too_old", "must not be before 1970-01-01")
    if value >= LATEST_DATE:
        raise PydanticCustomError("timestamp_too_late", "must be before 9000-01-01")
    return value


def _bounded_time(value: datetime) -> datetime:
    # (Comparing aware instants cannot overflow; converting year 1 at +01:00 to UTC does.)
    if value < EARLIEST_TIME:
        raise PydanticCustomError("timestamp_too_old", "must not be before 1970-01-01T00:00Z")
    if value >= LATEST_TIME:
        raise PydanticCustomError("timestamp_too_late", "must be before 9000-01-01T00:00Z")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_8601), AfterValidator(_bounded_date)]
# A date-time must say its offset: a naive one, or a bare date, is refused (timezone_aware)
# rather than guessed to be UTC or the server's time.
IsoAwareDatetime = Annotated[
    AwareDatetime, BeforeValidator(_iso_8601), AfterValidator(_bounded_time)
]


_QUERY_NAMES = "radar_query_names"  # the route's query parameter names, kept on the route


async def reject_unknown_query_parameters(request: Request) -> None:
    """A query parameter the route does not take is a 422 naming it, not silently ignored:
    `?statuss=open` would otherwise list every alert as if it had filtered them."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.url.path.startswith("/v1/"):
        return
    names: frozenset[str] | None = getattr(route, _QUERY_NAMES, None)
    if names is None:
        names = frozenset(
            param.alias
            for param in get_flat_params(route.dependant)
            if isinstance(param.field_info, fastapi_params.Query)
        )
        setattr(route, _QUERY_NAMES, names)
    unknown = sorted({name for name in request.query_params if name not in names})
    if unknown:
        raise ValidationFailed(
            f"Unknown query parameter(s): {', '.join(unknown)}.",
            errors=[
                FieldError(
                    pointer=json_pointer("query", name),
                    code="unknown_parameter",
                    message=f"this endpoint takes {', '.join(sorted(names)) or 'no parameters'}",
                )
                for name in unknown
            ],
        )
