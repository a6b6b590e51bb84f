from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class Loop(StrEnum):
    SWEEPER = "sweeper"
    SCORER = "scorer"


class SetAsideOut(BaseModel):
    id: int
    loop: Loop = Field(description="The background loop that set the item aside")
    item: str = Field(
        description="What failed, in the loop's terms: for the sweeper and the scorer a customer id"
    )
    error: str = Field(description="The last error (its type and message, without parameters)")
    failures: int = Field(description="How many times it failed alone")
    first_failed_at: datetime
    last_failed_at: datetime


class SetAsidePage(BaseModel):
    items: list[SetAsideOut]
    next_cursor: int | None = Field(description="Pass as `before` for the next (older) page")
