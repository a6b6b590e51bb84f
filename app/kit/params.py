"""Request parameters shared by routers: ids bounded to what the database can hold.

Ids are 64-bit integers in the database; a larger number in a path or query would fail in
the driver (a 500), so it is refused as a 422 naming the parameter instead.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

MAX_ROW_ID = 2**63 - 1

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
RowIdQuery = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)]
PageBefore = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID, description="A page's next_cursor")]
