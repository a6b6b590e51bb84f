"""Request parameters shared by routers: ids bounded to what the database can hold.

Ids are 64-bit integers in the database; a larger number in a path or query would fail in
the driver (a 500), so it is refused as a 422 naming the parameter instead.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import StringConstraints

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
