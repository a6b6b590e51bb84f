"""The streaming flow, in one place: append -> fold -> score -> decide -> publish.

- **append** (request path, `app.ingestion`): validate, deduplicate, store each new event and
  queue it in `scorer_queue`, in one transaction; answer once it has committed. Nothing that
  depends on the customer's other events runs there.
- **fold** (`Scorer`, here): claim a micro-batch of queued events, every customer's together,
  and fold each customer's pattern once (`app.customers`).
- **score and decide** (`app.alerts.Evaluator`): every touched customer scored in one
  vectorised call, the policy's rules applied, alerts opened, updated or resolved.
- **publish**: alert rows, their change-feed events and webhook outbox rows written from what
  the decision holds, in the transaction that deletes the batch's queue rows.

One transaction per batch makes it exactly once: a crash anywhere rolls the whole batch
back, queue rows included, and the next scorer folds it again. The queue holds what is
committed and not yet folded, whatever order transactions committed in (PostgreSQL takes
ids at insert, not at commit: a cursor on ids would skip events). Scorers (one per replica,
or `radar score`) claim disjoint rows (`FOR UPDATE SKIP LOCKED`), and lock the customers
they fold in customer_id order, so two never fold one customer at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Table, or_, select, update

from app.alerts.service import Evaluator
from app.customers import service as customers
from app.customers.repository import sqlite_timestamp
from app.customers.service import StoredEvent
from app.kit.backlog import Backlog
from app.kit.db import TransactionRunner, utcnow
from app.kit.errors import DATABASE_UNAVAILABLE_ERRORS
from app.kit.metrics import Metrics
from app.kit.periodic import Job
from app.models import ScorerQueue
from app.setaside import repository as setaside

logger = logging.getLogger("radar.scorer")

SCORER = "scorer"  # the loop's name among set-aside items
# How long a customer whose events could not be folded waits before they are tried again
# (a retry through `POST /v1/set-aside/{id}/retry` comes sooner).
SET_ASIDE_FOR = timedelta(hours=1)
NOTIFY_CHANNEL = "radar_scorer"  # PostgreSQL: ingest notifies, idle scorers listen

_queue = cast(Table, ScorerQueue.__table__)
_EVENT_COLUMNS = (
    "e.id, e.customer_id, e.kind, e.occurred_on, e.amount, e.store_id, e.items, "
    "e.attributes, e.staff_id, e.received_at"
)
_CLAIMED_EVENTS = f"SELECT {_EVENT_COLUMNS} FROM purchase_events e "  # noqa: S608
_PG_CLAIM = (
    "WITH claimed AS (DELETE FROM scorer_queue WHERE event_pk IN ("  # noqa: S608
    "SELECT event_pk FROM scorer_queue WHERE not_before IS NULL OR not_before <= $2 "
    "ORDER BY event_pk LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING event_pk) "
    + _CLAIMED_EVENTS
    + "JOIN claimed ON e.id = claimed.event_pk"
)
_PG_CLAIM_CUSTOMER = (
    "WITH claimed AS (DELETE FROM scorer_queue WHERE event_pk IN ("  # noqa: S608
    "SELECT event_pk FROM scorer_queue WHERE customer_id = $1 FOR UPDATE SKIP LOCKED) "
    "RETURNING event_pk) " + _CLAIMED_EVENTS + "JOIN claimed ON e.id = claimed.event_pk"
)
_SQLITE_CLAIM = (
    _CLAIMED_EVENTS + "JOIN scorer_queue q ON q.event_pk = e.id "
    "WHERE q.not_before IS NULL OR q.not_before <= ? ORDER BY q.event_pk LIMIT ?"
)
_SQLITE_CLAIM_CUSTOMER = (
    _CLAIMED_EVENTS + "JOIN scorer_queue q ON q.event_pk = e.id WHERE q.customer_id = ?"
)
_SQLITE_UNQUEUE = (
    "DELETE FROM scorer_queue WHERE event_pk <= ? AND (not_before IS NULL OR not_before <= ?)"
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A queued event as the fold needs it, with when it was received (the lag)."""

    event: StoredEvent
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Batch:
    events: int
    customers: int
    received: tuple[datetime, ...] = ()

    def __bool__(self) -> bool:
        return self.events > 0


def score_batch(
    connection: Connection,
    *,
    evaluator: Evaluator | None,
    now: datetime,
    limit: int,
    customer: str | None = None,
) -> Batch:
    """One micro-batch, in the caller's transaction: claim -> fold -> score -> decide ->
    publish. Without an evaluator (imports) the folded customers are left due for the
    sweeper instead of being scored now."""
    claimed = claim(connection, now=now, limit=limit, customer=customer)
    if not claimed:
        return Batch(0, 0)
    states = customers.fold(connection, [c.event for c in claimed])
    if evaluator is None:
        for state in states:
            state.next_check_at = now
        customers.save(connection, states)
    else:
        decisions = evaluator.evaluate(connection, states, now)
        customers.save(connection, states)
        evaluator.write(connection, decisions)
    return Batch(len(claimed), len(states), tuple(c.received_at for c in claimed))


def score_all(connection: Connection, *, evaluator: Evaluator | None, now: datetime) -> int:
    """Every claimable queued event, in the caller's transaction (imports and replays, which
    fold what they just stored before going on); returns the events folded."""
    total = 0
    while batch := score_batch(connection, evaluator=evaluator, now=now, limit=REPLAY_BATCH):
        total += batch.events
    return total


REPLAY_BATCH = 5000


def claim(
    connection: Connection, *, now: datetime, limit: int, customer: str | None = None
) -> list[Claimed]:
    """Take up to `limit` queued events (the oldest first), or every queued event of one
    customer, out of the queue; the transaction's rollback puts them back."""
    if connection.dialect.name == "postgresql":
        if customer is not None:
            rows = connection.exec_driver_sql(_PG_CLAIM_CUSTOMER, (customer,)).all()
        else:
            rows = connection.exec_driver_sql(_PG_CLAIM, (limit, now)).all()
        return [_claimed(row) for row in rows]
    # SQLite: the write lock is the transaction's (BEGIN IMMEDIATE): nobody else claims or
    # queues meanwhile, so read the first rows, then delete exactly those. Both statements
    # keep one text whatever the batch size (SQLite's statement cache then holds them).
    if customer is not None:
        rows = connection.exec_driver_sql(_SQLITE_CLAIM_CUSTOMER, (customer,)).all()
        connection.exec_driver_sql("DELETE FROM scorer_queue WHERE customer_id = ?", (customer,))
        return [_claimed(row) for row in rows]
    at = _sqlite_time(now)
    rows = connection.exec_driver_sql(_SQLITE_CLAIM, (at, limit)).all()
    if rows:
        # Exactly the rows read: the first `limit` claimable ones, by event_pk.
        connection.exec_driver_sql(_SQLITE_UNQUEUE, (rows[-1].id, at))
    return [_claimed(row) for row in rows]


def queued_customers(connection: Connection, now: datetime, limit: int) -> list[str]:
    """The customers of the next batch, for folding them one by one (after a failure)."""
    rows = connection.execute(
        select(_queue.c.customer_id).where(_claimable(now)).order_by(_queue.c.event_pk).limit(limit)
    )
    return list(dict.fromkeys(row[0] for row in rows))


def pending_count(connection: Connection) -> int:
    """Events committed and not yet folded (set-aside ones included)."""
    return int(connection.exec_driver_sql("SELECT count(*) FROM scorer_queue").scalar() or 0)


def set_aside(connection: Connection, customer_id: str, error: str, now: datetime) -> None:
    """Keep a customer whose events cannot be folded out of the scorer's way for a while."""
    connection.execute(
        update(_queue)
        .where(_queue.c.customer_id == customer_id)
        .values(not_before=now + SET_ASIDE_FOR)
    )
    setaside.record(connection, SCORER, customer_id, error, now)


def score_again(connection: Connection, customer_id: str) -> None:
    """A set-aside customer's events, claimable again at once."""
    connection.execute(
        update(_queue).where(_queue.c.customer_id == customer_id).values(not_before=None)
    )


def _claimable(now: datetime) -> ColumnElement[bool]:
    return or_(_queue.c.not_before.is_(None), _queue.c.not_before <= now)


def rebuild(connection: Connection) -> int:
    """Every pattern recomputed from the stored events (`radar rebuild`): the queue is
    folded by the rebuild itself, so it is emptied in the same transaction."""
    connection.exec_driver_sql("DELETE FROM scorer_queue")
    return customers.rebuild(connection)


def _claimed(row: Any) -> Claimed:
    received = row.received_at
    if isinstance(received, str):  # SQLite, raw: naive UTC text
        received = datetime.fromisoformat(received).replace(tzinfo=UTC)
    return Claimed(customers.stored_event(row), received)


def _set(event: asyncio.Event, *_: object) -> None:
    event.set()


def _sqlite_time(value: datetime) -> str:
    text = sqlite_timestamp(value)
    assert text is not None
    return text


class Scorer:
    """The loop that folds, scores and publishes queued events in micro-batches.

    It waits for a wake-up (this process's ingest commits, or, on PostgreSQL, a NOTIFY from
    any replica's) or `idle_poll`, then takes batches until the queue is empty. A batch that
    fails for anything but the database being away is folded again customer by customer; a
    customer that fails alone is set aside (`GET /v1/set-aside`) with its events kept in the
    queue, so that one bad customer cannot stop the others.
    """

    def __init__(
        self,
        transactions: TransactionRunner,
        evaluator: Evaluator | None,
        clock: Callable[[], datetime] = utcnow,
        *,
        backlog: Backlog | None = None,
        metrics: Metrics | None = None,
        batch_size: int = 2000,
        idle_poll: timedelta = timedelta(seconds=1),
        linger: timedelta = timedelta(0),
        listen_url: str | None = None,
    ) -> None:
        self._transactions = transactions
        self._evaluator = evaluator
        self._clock = clock
        self._backlog = backlog
        self._metrics = metrics
        self._batch_size = batch_size
        self._idle_poll = idle_poll.total_seconds()
        self._linger = linger.total_seconds()
        self._listen_url = listen_url
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.folded = 0
        self.set_aside = 0

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="scorer"))
        if self._listen_url is not None:
            self._tasks.append(asyncio.create_task(self._listen(), name="scorer-listen"))

    def wake(self) -> None:
        self._wakeup.set()

    async def stop(self, grace: timedelta = timedelta(seconds=10)) -> None:
        """Finish the batch in hand and fold what is queued, for up to `grace`."""
        self._stopping = True
        self._wakeup.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks[:1], timeout=grace.total_seconds())
            for task in [*late, *self._tasks[1:]]:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def drain(self) -> int:
        """Fold until the queue holds nothing claimable; returns the events folded."""
        total = 0
        while True:
            done = await self.step()
            total += done
            if done == 0:
                return total

    async def step(self) -> int:
        """One batch (the customers one by one if it fails); the events claimed."""
        async with self._lock:
            now = self._clock()
            try:
                return (await self._fold(now)).events
            except DATABASE_UNAVAILABLE_ERRORS:
                raise
            except Exception:
                logger.exception("scoring a batch failed; scoring its customers one by one")
                return await self._one_by_one(now)

    async def _fold(self, now: datetime, customer: str | None = None) -> Batch:
        """One transaction: the next batch (or every queued event of `customer`)."""
        started = time.perf_counter()
        batch = await self._transactions.run(
            partial(
                score_batch,
                evaluator=self._evaluator,
                now=now,
                limit=self._batch_size,
                customer=customer,
            )
        )
        self._account(batch, time.perf_counter() - started)
        return batch

    async def _one_by_one(self, now: datetime) -> int:
        due = await self._transactions.read(lambda c: queued_customers(c, now, self._batch_size))
        total = 0
        for customer_id in due:
            try:
                batch = await self._fold(now, customer_id)
            except DATABASE_UNAVAILABLE_ERRORS:
                raise
            except Exception as exc:
                logger.exception(
                    "customer set aside by the scorer", extra={"customer": customer_id}
                )
                error = f"{type(exc).__name__}: {exc}"
                await self._transactions.run(
                    partial(set_aside, customer_id=customer_id, error=error, now=now)
                )
                self.set_aside += 1
                if self._metrics is not None:
                    self._metrics.set_aside.labels(SCORER).inc()
                total += 1  # not folded, but out of the way: the loop goes on
                continue
            total += batch.events
        return total

    def _account(self, batch: Batch, seconds: float) -> None:
        self.folded += batch.events
        if self._backlog is not None:
            self._backlog.taken(batch.events)
        if self._metrics is None or not batch.events:
            return
        self._metrics.scored_events.inc(batch.events)
        self._metrics.scorer_batch_seconds.observe(seconds)
        now = utcnow()
        for received in batch.received:
            self._metrics.scorer_lag.observe((now - received).total_seconds())

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                # Micro-batches: after a wake-up, and after each batch that was not full,
                # wait `linger` for more events to arrive, so that a steady stream is
                # folded in batches of many rather than one transaction per event.
                await self._linger_a_little()
                while (done := await self.step()) > 0:
                    if done < self._batch_size:
                        await self._linger_a_little()
            except asyncio.CancelledError:
                raise
            except DATABASE_UNAVAILABLE_ERRORS as exc:
                if self._stopping:
                    return  # what is queued stays queued for the next scorer
                logger.warning("scorer paused: database unavailable (%r)", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), min(self._idle_poll, 1.0))
                continue
            except Exception:
                logger.exception("scorer round failed")
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._idle_poll)

    async def _linger_a_little(self) -> None:
        if self._linger > 0 and not self._stopping:
            await asyncio.sleep(self._linger)

    async def _listen(self) -> None:
        """PostgreSQL: wake on any replica's ingest (NOTIFY), reconnecting after outages."""
        import asyncpg

        assert self._listen_url is not None
        dsn = self._listen_url.replace("+asyncpg", "")
        while not self._stopping:
            try:
                connection = await asyncpg.connect(dsn, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                logger.warning("scorer cannot listen for new events yet (%r)", exc)
                await asyncio.sleep(5)
                continue
            lost = asyncio.Event()
            connection.add_termination_listener(partial(_set, lost))
            try:
                await connection.add_listener(NOTIFY_CHANNEL, lambda *_: self.wake())
                await lost.wait()  # (stop() cancels this task)
                logger.warning("scorer's listening connection was lost; reconnecting")
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 2)


BACKLOG_COUNT_INTERVAL = timedelta(seconds=1)


def periodic_jobs(transactions: TransactionRunner, backlog: Backlog) -> list[Job]:
    """The flow's loops (the scorer is a loop of its own): the backlog as the database
    counts it, every replica's ingest and every scorer included."""

    async def count() -> int:
        backlog.counted(await transactions.read(pending_count))
        return backlog.pending

    return [Job(BACKLOG_COUNT_INTERVAL, "count-scorer-backlog", count)]
