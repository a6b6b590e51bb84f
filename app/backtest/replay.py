"""Replaying a purchase history through the service's own code, with the clock following it.

Every row is read and validated as `radar import` does; the valid events are sorted by when
they happened and fed to a throw-away SQLite database one simulated step (a day, by default)
at a time: the step's events are stored and their customers evaluated as the service does
live (`plan_store` + `apply_plan`, then the scorer's `score_all` in the same transaction),
then the sweeper runs at the step's end
for the customers who sent nothing. Because history arrives in event-time order, each alert
opens on what the customer had done by that day, never on their future. The population model
stays the built-in prior (no refits), so the same file and policy always give the same alerts.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Connection, select

from app.alerts.service import Evaluator, sweep
from app.imports.reader import ReadOptions, read
from app.imports.service import chunks, validate_rows
from app.ingestion.schemas import EventKind, EventLimits, ItemStatus
from app.ingestion.service import Candidate, StorePlan, apply_plan, plan_store
from app.kit.db import TransactionRunner, open_transactions
from app.kit.settings import Settings, get_settings
from app.models import Alert, AlertEvent
from app.pipeline import score_all
from app.policy import service as policies
from app.policy.schemas import PolicyBody

READ_CHUNK = 2000  # rows validated at a time (as the import does)
SWEEP_BATCH = 1000  # customers per sweep transaction (the service's default)
Progress = Callable[[int, int], None]  # (steps done, steps in all)


@dataclass(frozen=True, slots=True)
class Reject:
    line: int
    field: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Purchase:
    customer_id: str
    day: date  # the visit day, by the event's own offset, as the service counts visits


@dataclass(frozen=True, slots=True)
class OpenedAlert:
    customer_id: str
    rule: str
    day: date  # the simulated day it opened on
    value_at_risk: Decimal  # as announced when it opened (open alerts refresh theirs later)


@dataclass(slots=True)
class Replay:
    """What the replay stored and what the policy raised on it."""

    policy: PolicyBody
    step_days: int
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejects: list[Reject] = field(default_factory=list)
    purchases: list[Purchase] = field(default_factory=list)
    customers: int = 0
    first_day: date | None = None  # of the first event (UTC), where the clock starts
    last_day: date | None = None  # of the last event (UTC): the end of the data
    steps: int = 0
    alerts: list[OpenedAlert] = field(default_factory=list)


async def replay(
    path: Path,
    options: ReadOptions,
    policy: PolicyBody,
    *,
    step_days: int = 1,
    progress: Progress | None = None,
) -> Replay:
    """Replay the file under the policy in a fresh database, deleted afterwards."""
    candidates = load(path, options)
    steps = schedule(candidates, step_days)
    result = Replay(policy, step_days, rows=len(candidates), steps=len(steps))
    if steps:
        first = _utc_day(steps[0][0])
        result.first_day = first
        result.last_day = _utc_day(steps[-1][-1])
        async with _throwaway_database() as transactions:
            start = datetime.combine(first, time(), UTC)
            await transactions.run(
                functools.partial(
                    policies.replace, body=policy, source="file", created_by="backtest", now=start
                )
            )
            await _walk(transactions, first, steps, step_days, progress)
            result.alerts = await transactions.run(opened_alerts)
    _tally(result, candidates)
    return result


def load(path: Path, options: ReadOptions) -> list[Candidate]:
    """Every row, read and validated as the API would (rejected rows keep their errors).
    The file's one currency is `--currency`'s, or RADAR_CURRENCY's."""
    limits = EventLimits(currency=(options.default_currency or get_settings().currency).upper())
    candidates: list[Candidate] = []
    for rows in chunks(read(path, options), READ_CHUNK):
        candidates.extend(validate_rows(rows, limits))
    return candidates


def schedule(candidates: Sequence[Candidate], step_days: int) -> list[list[Candidate]]:
    """The valid events in event-time order, cut into consecutive steps of `step_days` UTC
    days from the first event's day (steps without events are kept: the sweeper runs then)."""
    valid = sorted((c for c in candidates if c.event is not None and not c.errors), key=_at)
    if not valid:
        return []
    first = _utc_day(valid[0])
    steps: list[list[Candidate]] = [[] for _ in range(_step_of(valid[-1], first, step_days) + 1)]
    for candidate in valid:
        steps[_step_of(candidate, first, step_days)].append(candidate)
    return steps


def step_end(first: date, index: int, step_days: int) -> datetime:
    """The last microsecond of the step: its events have all happened, every customer due
    during its last day is due (next checks are spread over the day's hours), and the
    evaluation's day (`now.date()`) is that last day, not the next."""
    following = datetime.combine(first + timedelta(days=(index + 1) * step_days), time(), UTC)
    return following - timedelta(microseconds=1)


async def _walk(
    transactions: TransactionRunner,
    first: date,
    steps: Sequence[Sequence[Candidate]],
    step_days: int,
    progress: Progress | None,
) -> None:
    evaluator = Evaluator()  # one for the whole replay: it caches the policy and the model
    for index, events in enumerate(steps):
        now = step_end(first, index, step_days)
        if events:
            # Received at the step's end, after every event in it: none is "in the future".
            plan = plan_store(events, received_at=now, max_future_skew=timedelta(0))
            await transactions.run(
                functools.partial(_store_and_score, plan=plan, evaluator=evaluator, now=now)
            )
        await sweep(
            transactions, evaluator, _fixed(now), batch_size=SWEEP_BATCH, max_batches=sys.maxsize
        )
        if progress is not None:
            progress(index + 1, len(steps))


def _store_and_score(
    connection: Connection, plan: StorePlan, evaluator: Evaluator, now: datetime
) -> None:
    apply_plan(connection, plan)
    score_all(connection, evaluator=evaluator, now=now)


def opened_alerts(connection: Connection) -> list[OpenedAlert]:
    """Every alert the replay opened, with the simulated time of its `alert.opened` event and
    the value at risk it announced."""
    query = (
        select(Alert.customer_id, Alert.rule, AlertEvent.occurred_at, AlertEvent.data)
        .join(AlertEvent, AlertEvent.alert_id == Alert.id)
        .where(AlertEvent.type == "alert.opened")
        .order_by(AlertEvent.occurred_at, Alert.customer_id, Alert.rule)
    )
    return [
        OpenedAlert(customer, rule, at.date(), Decimal(str(data["value_at_risk"])))
        for customer, rule, at, data in connection.execute(query)
    ]


def _tally(result: Replay, candidates: Sequence[Candidate]) -> None:
    customers: set[str] = set()
    for candidate in candidates:
        if candidate.status is ItemStatus.ACCEPTED:
            assert candidate.event is not None
            result.accepted += 1
            customers.add(candidate.event.customer_id)
            if candidate.event.kind is EventKind.PURCHASE:
                # The date in the event's own offset: the day the service counts as a visit.
                day = candidate.event.occurred_at.date()
                result.purchases.append(Purchase(candidate.event.customer_id, day))
        elif candidate.status is ItemStatus.DUPLICATE:
            result.duplicates += 1
        else:  # unreadable, invalid, or an event_id reused with other content
            error = candidate.errors[0]  # the first reason is enough to fix the row
            name = error["pointer"].lstrip("/")
            result.rejects.append(Reject(candidate.index, name, error["code"], error["message"]))
    result.customers = len(customers)


@asynccontextmanager
async def _throwaway_database() -> AsyncIterator[TransactionRunner]:
    with tempfile.TemporaryDirectory(prefix="radar-backtest-") as directory:
        settings = Settings(
            database_url=f"sqlite:///{directory}/backtest.db",
            migrate_on_start=True,
            sqlite_synchronous="NORMAL",  # a crash loses nothing worth keeping
        )
        async with open_transactions(settings) as transactions:
            yield transactions


def _fixed(now: datetime) -> Callable[[], datetime]:
    return lambda: now


def _at(candidate: Candidate) -> datetime:
    assert candidate.event is not None
    return candidate.event.occurred_at


def _utc_day(candidate: Candidate) -> date:
    return _at(candidate).astimezone(UTC).date()


def _step_of(candidate: Candidate, first: date, step_days: int) -> int:
    return (_utc_day(candidate) - first).days // step_days
