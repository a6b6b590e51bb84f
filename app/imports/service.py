"""`radar import`: purchase history into the service, through the ingestion's own code path.

Locally, rows are validated, deduplicated and stored exactly as the batch endpoint does
(`plan_store` / `apply_plan`), thousands per transaction. The customers' alerts are not
evaluated row by row (a history cut into transactions would open alerts on its first part
and resolve them on the rest): the imported customers are left due, and the sweeper, or
`--sweep`, evaluates each once, on its whole history. Remotely (`--url`), the same rows go
to the batch endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import ValidationError
from sqlalchemy import Connection

from app.imports.reader import FIELDS, ReadOptions, Row, read
from app.ingestion.schemas import DEFAULT_LIMITS, EventLimits, ItemStatus
from app.ingestion.service import (
    EVENT_ADAPTER,
    Candidate,
    StorePlan,
    apply_plan,
    plan_store,
    validation_errors,
)
from app.kit.db import TransactionRunner, utcnow
from app.pipeline import score_all

LOCAL_CHUNK = 2000  # rows per transaction (measured: 1,000-5,000 alike; 20,000 slower)
REMOTE_CHUNK = 1000  # the batch endpoint's limit
Progress = Callable[[int, int], None]  # (rows done, bytes read)


@dataclass(frozen=True, slots=True)
class Reject:
    line: int
    event_id: str | None
    pointer: str
    code: str
    message: str
    raw: str


@dataclass(slots=True)
class ImportSummary:
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejects: list[Reject] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
        }


def chunks(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def validate_rows(rows: Sequence[Row], limits: EventLimits = DEFAULT_LIMITS) -> list[Candidate]:
    """Validate each row as the API would; a row that could not be read is rejected."""
    found = []
    for row in rows:
        candidate = Candidate(row.line, None, "")
        if row.error is not None:
            candidate.reject(row.error.name, row.error.code, row.error.message)
        else:
            assert row.event is not None
            candidate.event_id = str(row.event.get("event_id"))
            try:
                candidate.event = EVENT_ADAPTER.validate_python(row.event, context=limits.context())
            except ValidationError as exc:
                candidate.errors = validation_errors(exc)
        found.append(candidate)
    return found


SAMPLE_ROWS = 20  # the rows read first to check the mapping before anything is stored


def check_sample(
    path: Path, options: ReadOptions, limits: EventLimits | None = DEFAULT_LIMITS
) -> None:
    """Raise ValueError (one line) when every one of the first rows is rejected: the mapping,
    the date format or the decimal mark is wrong, and importing would store nothing. With
    `limits` None (a remote service, whose settings are not known here) only what the file
    reader finds counts."""
    rows = list(islice(read(path, options), SAMPLE_ROWS))
    if not rows:
        return
    if limits is None:
        errors = [
            (row, {"pointer": "/" + row.error.name, "message": row.error.message})
            for row in rows
            if row.error is not None
        ]
    else:
        errors = [
            (row, candidate.errors[0])
            for row, candidate in zip(rows, validate_rows(rows, limits), strict=True)
            if candidate.errors
        ]
    if len(errors) < len(rows):
        return
    reasons = Counter(error["pointer"] for _, error in errors)
    pointer, count = reasons.most_common(1)[0]
    row, error = next((row, error) for row, error in errors if error["pointer"] == pointer)
    field = pointer.strip("/").split("/")[0]
    hint = f"check --map {field}=COLUMN" if field in FIELDS else "check the file and --map"
    if field == "occurred_at":
        hint += " and --date-format"
    elif field == "amount":
        hint += " and --decimal"
    elif field in ("store_id", "currency"):
        hint += f" (or --{'store' if field == 'store_id' else 'currency'})"
    raise ValueError(
        f"stopped before importing: the first {len(rows)} rows are all rejected, {count} on "
        f"{field or 'the row'} (line {row.line}: {error['message']}); {hint}"
    )


def _tally(summary: ImportSummary, rows: Sequence[Row], candidates: Iterable[Candidate]) -> None:
    for row, candidate in zip(rows, candidates, strict=True):
        summary.rows += 1
        if candidate.status is ItemStatus.ACCEPTED:
            summary.accepted += 1
        elif candidate.status is ItemStatus.DUPLICATE:
            summary.duplicates += 1
        else:  # the first reason per row: enough to fix it, the rest show up on the re-run
            error = candidate.errors[0]
            summary.rejects.append(
                Reject(
                    row.line,
                    candidate.event_id,
                    error["pointer"],
                    error["code"],
                    error["message"],
                    row.raw,
                )
            )


async def import_local(
    transactions: TransactionRunner,
    path: Path,
    options: ReadOptions,
    *,
    max_future_skew: timedelta,
    limits: EventLimits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> ImportSummary:
    summary = ImportSummary()
    started = time.perf_counter()
    position = [0]
    storing: asyncio.Task[None] | None = None
    # While one chunk is being stored (in the database's thread), the next is read and
    # validated here: the two overlap instead of taking turns.
    for rows in chunks(read(path, options, position), LOCAL_CHUNK):
        candidates = validate_rows(rows, limits)
        plan = plan_store(candidates, received_at=utcnow(), max_future_skew=max_future_skew)
        if storing is not None:
            await storing
        storing = asyncio.create_task(_store(transactions, plan, summary, rows, candidates))
        if progress is not None:
            progress(summary.rows, position[0])
    if storing is not None:
        await storing
    if progress is not None:
        progress(summary.rows, position[0])
    summary.seconds = time.perf_counter() - started
    return summary


async def _store(
    transactions: TransactionRunner,
    plan: StorePlan,
    summary: ImportSummary,
    rows: Sequence[Row],
    candidates: Sequence[Candidate],
) -> None:
    # No evaluator: the customers are left due, to be evaluated once on their whole history.
    def store(connection: Connection) -> None:
        apply_plan(connection, plan)
        # Folded at once, left due: the sweeper (or --sweep) evaluates each customer once,
        # on the whole history, rather than the scorer on its first part.
        score_all(connection, evaluator=None, now=utcnow())

    await transactions.run(store)
    _tally(summary, rows, candidates)


async def import_remote(
    url: str,
    key: str,
    path: Path,
    options: ReadOptions,
    *,
    progress: Progress | None = None,
    attempts: int = 5,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ImportSummary:
    """Post the rows to a running service's batch endpoint, retrying 429/503 as told."""
    summary = ImportSummary()
    started = time.perf_counter()
    position = [0]
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=url.rstrip("/"), headers=headers, timeout=60, transport=transport
    ) as http:
        for rows in chunks(read(path, options, position), REMOTE_CHUNK):
            candidates = [Candidate(row.line, None, "") for row in rows]
            sendable = []
            for row, candidate in zip(rows, candidates, strict=True):
                if row.error is not None:
                    candidate.reject(row.error.name, row.error.code, row.error.message)
                else:
                    assert row.event is not None
                    candidate.event_id = str(row.event.get("event_id"))
                    sendable.append((row, candidate))
            if sendable:
                answer = await _post(http, [row.event for row, _ in sendable], attempts)
                for (_, candidate), result in zip(sendable, answer["results"], strict=True):
                    candidate.status = ItemStatus(result["status"])
                    for error in result.get("errors") or []:
                        candidate.errors.append({**error, "pointer": _strip(error["pointer"])})
            _tally(summary, rows, candidates)
            if progress is not None:
                progress(summary.rows, position[0])
    summary.seconds = time.perf_counter() - started
    return summary


def _strip(pointer: str) -> str:
    """`/events/12/amount` -> `/amount`: the row is named by its line."""
    parts = pointer.split("/", 3)
    return "/" + parts[3] if len(parts) > 3 else ""


async def _post(http: httpx.AsyncClient, events: list[Any], attempts: int) -> dict[str, Any]:
    for attempt in range(1, attempts + 1):
        response = await http.post("/v1/purchases/batch", json={"events": events})
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        retry = response.status_code in (429, 503) and attempt < attempts
        if not retry:
            raise RemoteError(response.status_code, response.text[:500])
        await asyncio.sleep(float(response.headers.get("retry-after", "1") or 1))
    raise AssertionError("unreachable")


class RemoteError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"the service answered {status}: {body}")
        self.status = status
        try:  # a problem+json body: its detail says it best
            problem = orjson.loads(body)
            self.detail = str(problem.get("detail") or problem.get("title") or body)
        except (orjson.JSONDecodeError, AttributeError):
            self.detail = " ".join(body.split())
