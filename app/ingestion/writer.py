"""Group commit: events from concurrent requests are stored in one transaction.

A commit costs far more than an insert (an fsync on SQLite with synchronous=FULL, a round
trip and a WAL flush on PostgreSQL), so requests that arrive while a commit is under way wait
for the next one and share it. Nobody is answered before the transaction holding their events
has committed. A request with an Idempotency-Key gets a transaction of its own, so that its
stored answer commits or rolls back with exactly its events.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import Connection
from starlette.responses import Response

from app.ingestion import idempotency, service
from app.ingestion.service import Candidate
from app.kit.backlog import Backlog
from app.kit.db import TransactionRunner, utcnow
from app.kit.errors import DATABASE_UNAVAILABLE_ERRORS, RadarError, ServiceUnavailable
from app.kit.metrics import Metrics

logger = logging.getLogger("radar.ingestion.writer")

Render = Callable[[Sequence[Candidate]], Response]


@dataclass(slots=True, eq=False)
class IdempotencyRequest:
    api_key_id: int
    key: str
    fingerprint: bytes


@dataclass(slots=True, eq=False)
class _Submission:
    candidates: Sequence[Candidate]
    render: Render
    idempotency: IdempotencyRequest | None
    future: asyncio.Future[Response] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class EventWriter:
    def __init__(
        self,
        transactions: TransactionRunner,
        *,
        max_future_skew: timedelta,
        idempotency_ttl: timedelta,
        workers: int = 1,
        max_group_events: int = 5000,
        max_pending_events: int = 100_000,
        metrics: Metrics | None = None,
        backlog: Backlog | None = None,
        on_appended: Callable[[int], None] | None = None,
    ) -> None:
        self._transactions = transactions
        self._metrics = metrics
        # The scorer's backlog: above its bound, new work is refused (503) until it drains.
        self._backlog = backlog
        self._on_appended = on_appended  # told, after each commit, how many events were new
        self._max_future_skew = max_future_skew
        self._idempotency_ttl = idempotency_ttl
        self._workers = workers
        self._max_group_events = max_group_events
        self._max_pending_events = max_pending_events
        self._pending: deque[_Submission] = deque()
        self._pending_events = 0
        self._wakeup = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._origin = 0
        self._closing = False

    def start(self) -> None:
        for number in range(self._workers):
            self._tasks.append(asyncio.create_task(self._run(), name=f"event-writer-{number}"))

    async def stop(self, drain_seconds: float = 30.0) -> None:
        """Refuse new work, let the workers finish what was submitted, then stop them."""
        self._closing = True
        async with self._wakeup:
            self._wakeup.notify_all()
        _, late = await asyncio.wait(self._tasks, timeout=drain_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for submission in self._pending:
            _settle(
                submission.future,
                ServiceUnavailable("The service is shutting down.", headers={"Retry-After": "5"}),
            )

    async def submit(
        self,
        candidates: Sequence[Candidate],
        render: Render,
        idempotency_request: IdempotencyRequest | None = None,
    ) -> Response:
        """Store the candidates (setting their status) and return `render`'s answer."""
        if self._closing:
            raise ServiceUnavailable("The service is shutting down.", headers={"Retry-After": "5"})
        if self._backlog is not None and self._backlog.over():
            raise ServiceUnavailable(
                f"{self._backlog.pending} events are waiting to be scored (more than "
                f"{self._backlog.bound}); retry shortly.",
                code="scorer_backlog",
                headers={"Retry-After": "2"},
            )
        if self._pending_events >= self._max_pending_events:
            raise ServiceUnavailable(
                "Too many events are waiting to be stored; retry shortly.",
                code="overloaded",
                headers={"Retry-After": "1"},
            )
        self._origin += 1
        for candidate in candidates:
            candidate.origin = self._origin
        submission = _Submission(candidates, render, idempotency_request)
        self._pending.append(submission)
        self._pending_events += len(candidates)
        async with self._wakeup:
            self._wakeup.notify()
        # shield: a client that hangs up must not cancel the shared future; its events are
        # stored all the same, and its retry will be answered "duplicate".
        return await asyncio.shield(submission.future)

    async def _run(self) -> None:
        while True:
            async with self._wakeup:
                await self._wakeup.wait_for(lambda: bool(self._pending) or self._closing)
            if self._closing and not self._pending:
                return
            group = self._take_group()
            if group:
                await self._flush(group)

    def _take_group(self) -> list[_Submission]:
        group: list[_Submission] = []
        size = 0
        while self._pending:
            head = self._pending[0]
            alone = head.idempotency is not None
            if group and (alone or size + len(head.candidates) > self._max_group_events):
                break
            group.append(self._pending.popleft())
            size += len(head.candidates)
            self._pending_events -= len(head.candidates)
            if alone:
                break
        return group

    async def _flush(self, group: list[_Submission]) -> None:
        try:
            # Rows and hashes are built here, on the event loop; the transaction (in a thread
            # on SQLite) then holds the GIL as little as possible.
            now = utcnow()
            candidates = [c for submission in group for c in submission.candidates]
            plan = service.plan_store(
                candidates, received_at=now, max_future_skew=self._max_future_skew
            )
            answers, appended = await self._transactions.run(
                lambda c: self._store(c, group, plan, now)
            )
        except Exception as exc:
            if len(group) > 1 and not _database_unavailable(exc):
                # One bad request must not fail the others: retry each on its own. (When the
                # database itself is gone, retrying one by one would only multiply timeouts.)
                for submission in group:
                    _reset(submission.candidates)
                    await self._flush([submission])
                return
            if _by_customer_helps(group, exc):
                # One customer's events must not fail the batch's other customers (a pattern
                # the fold cannot apply, say): each customer in a transaction of its own.
                logger.exception("storing a batch failed; storing it customer by customer")
                await self._flush_by_customer(group[0])
                return
            if _database_unavailable(exc):
                # Answered 503 with Retry-After (and logged) by the error handler; no
                # traceback per request while the database is away.
                logger.warning("storing events failed: database unavailable (%r)", exc)
            elif not isinstance(exc, RadarError):
                logger.exception("storing events failed")
            for submission in group:
                _settle(submission.future, exc)
            return
        self._appended(appended)
        for submission, answer in zip(group, answers, strict=True):
            _settle(submission.future, answer)

    def _appended(self, count: int) -> None:
        if count:
            if self._backlog is not None:
                self._backlog.added(count)
            if self._on_appended is not None:
                self._on_appended(count)

    async def _flush_by_customer(self, submission: _Submission) -> None:
        candidates = submission.candidates
        _reset(candidates)
        parts: dict[str, list[Candidate]] = {}
        for candidate in candidates:
            if candidate.event is not None and not candidate.errors:
                parts.setdefault(candidate.event.customer_id, []).append(candidate)
        for customer_id, part in sorted(parts.items()):
            now = utcnow()
            plan = service.plan_store(part, received_at=now, max_future_skew=self._max_future_skew)
            try:
                appended = await self._transactions.run(partial(service.apply_plan, plan=plan))
            except Exception as exc:
                if _database_unavailable(exc):
                    _settle(submission.future, exc)
                    return
                logger.exception("events set aside", extra={"customer": customer_id})
                if self._metrics is not None:
                    self._metrics.set_aside.labels("writer").inc()
                _reset(part)
                for candidate in part:
                    candidate.reject("", "not_stored", _not_stored(exc))
                continue
            self._appended(appended)
        try:
            _settle(submission.future, submission.render(candidates))
        except RadarError as exc:
            _settle(submission.future, exc)

    def _store(
        self,
        connection: Connection,
        group: list[_Submission],
        plan: service.StorePlan,
        now: datetime,
    ) -> tuple[list[Response | Exception], int]:
        """The whole group's transaction, run synchronously in one go (TransactionRunner);
        the answers, and how many events were new."""
        keyed = group[0].idempotency if len(group) == 1 else None
        claim = None
        if keyed is not None:
            claim = idempotency.claim(
                connection,
                api_key_id=keyed.api_key_id,
                key=keyed.key,
                request_fingerprint=keyed.fingerprint,
                now=now,
                ttl=self._idempotency_ttl,
            )
            if claim.replay is not None:
                return [claim.replay], 0
        appended = service.apply_plan(connection, plan)
        answers: list[Response | Exception] = []
        for submission in group:
            try:
                answers.append(submission.render(submission.candidates))
            except RadarError as exc:
                if claim is not None:
                    raise  # roll back the claim: errors are not remembered
                answers.append(exc)
        if claim is not None:
            answer = answers[0]
            assert isinstance(answer, Response)
            claim.save(connection, answer)
        return answers, appended


def _by_customer_helps(group: list[_Submission], exc: Exception) -> bool:
    """A lone batch (an idempotent one stays all or nothing) of several customers, failed
    for something other than the database being away or the request itself."""
    if len(group) != 1 or group[0].idempotency is not None:
        return False
    if _database_unavailable(exc) or isinstance(exc, RadarError):
        return False
    customers = {c.event.customer_id for c in group[0].candidates if c.event is not None}
    return len(customers) > 1


def _not_stored(exc: Exception) -> str:
    return (
        f"this customer's events could not be stored ({type(exc).__name__}); nothing of "
        "them was kept and the error is logged: send them again later"
    )


def _database_unavailable(exc: Exception) -> bool:
    return isinstance(exc, DATABASE_UNAVAILABLE_ERRORS)


def _settle(future: asyncio.Future[Response], outcome: Response | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _reset(candidates: Sequence[Candidate]) -> None:
    """Forget what a failed transaction decided, keeping the validation errors."""
    for candidate in candidates:
        candidate.status = None
        candidate.errors = [e for e in candidate.errors if e["code"] not in _STORE_CODES]


_STORE_CODES = frozenset(
    {
        "event_id_conflict",
        "future_timestamp",
        "refund_of_unknown_event",
        "refund_of_refund",
        "refund_customer_mismatch",
        "refund_exceeds_purchase",
    }
)
