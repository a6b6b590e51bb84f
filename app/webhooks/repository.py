"""Every webhook query: endpoints, the outbox and queue of deliveries, and their attempts.

Runs inside the caller's transaction (a `TransactionRunner` unit), like the alerts'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)

from app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage

_endpoints = cast(Table, WebhookEndpoint.__table__)
_messages = cast(Table, WebhookMessage.__table__)
_deliveries = cast(Table, WebhookDelivery.__table__)
_attempts = cast(Table, WebhookAttempt.__table__)
UNFINISHED = ("pending", "sending")


@dataclass(slots=True)
class EndpointRow:
    id: int
    url: str
    description: str
    event_types: list[str]
    filters: dict[str, Any]
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    rate_limit: float | None
    ordered: bool
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    failing_since: datetime | None
    consecutive_failures: int
    paused_until: datetime | None
    created_at: datetime
    updated_at: datetime

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret, and the previous one while its grace period lasts."""
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and expires > now:
            return [self.secret, self.previous_secret]
        return [self.secret]


_ENDPOINT_COLUMNS = [_endpoints.c[name] for name in EndpointRow.__slots__]


def _endpoint(values: Any) -> EndpointRow:
    return EndpointRow(*values)


def insert_endpoint(connection: Connection, values: dict[str, Any]) -> EndpointRow:
    row = connection.execute(insert(_endpoints).values(values).returning(*_ENDPOINT_COLUMNS))
    return _endpoint(row.one())


def get_endpoint(connection: Connection, endpoint_id: int, *, lock: bool = False) -> EndpointRow:
    query = select(*_ENDPOINT_COLUMNS).where(_endpoints.c.id == endpoint_id)
    row = connection.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise LookupError(endpoint_id)
    return _endpoint(row)


def list_endpoints(connection: Connection) -> list[EndpointRow]:
    rows = connection.execute(select(*_ENDPOINT_COLUMNS).order_by(_endpoints.c.id))
    return [_endpoint(row) for row in rows]


def update_endpoint(connection: Connection, endpoint_id: int, values: dict[str, Any]) -> None:
    connection.execute(update(_endpoints).where(_endpoints.c.id == endpoint_id).values(values))


def delete_endpoint(connection: Connection, endpoint_id: int) -> bool:
    result = connection.execute(delete(_endpoints).where(_endpoints.c.id == endpoint_id))
    return result.rowcount > 0


# -- the outbox ----------------------------------------------------------------------------


def insert_messages(connection: Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    result = connection.execute(
        insert(_messages).returning(_messages.c.id, sort_by_parameter_order=True), list(rows)
    )
    return [row[0] for row in result]


def insert_deliveries(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        connection.execute(insert(_deliveries), list(rows))


# -- the queue -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed delivery: what to send, where, and the lease it was claimed under."""

    delivery_id: int
    attempt: int  # this attempt's number, 1 for the first; also the lease token
    endpoint: EndpointRow
    message_uid: str
    payload: dict[str, Any]


def queue_heads(connection: Connection) -> list[tuple[EndpointRow, datetime]]:
    """Enabled endpoints with unfinished deliveries, and when the next can be sent: the
    earliest due, or for an ordered endpoint its oldest one's."""
    d = _deliveries.c
    unfinished = (d.endpoint_id == _endpoints.c.id, d.status.in_(UNFINISHED))
    earliest = select(func.min(d.next_attempt_at)).where(*unfinished).scalar_subquery()
    head = select(d.next_attempt_at).where(*unfinished).order_by(d.id).limit(1).scalar_subquery()
    due = case((_endpoints.c.ordered, head), else_=earliest)
    query = select(*_ENDPOINT_COLUMNS, due).where(_endpoints.c.enabled)
    return [
        (_endpoint(row[:-1]), row[-1]) for row in connection.execute(query) if row[-1] is not None
    ]


def claim(
    connection: Connection, endpoint: EndpointRow, now: datetime, lease_end: datetime, limit: int
) -> list[Job]:
    """Up to `limit` due deliveries of the endpoint, leased until `lease_end`.

    On PostgreSQL deliveries another dispatcher is claiming are skipped, not waited for.
    An ordered endpoint gives only its oldest unfinished delivery, and only when it is due:
    its row lock keeps two dispatchers from both taking that head.
    """
    d = _deliveries.c
    if endpoint.ordered:
        locked = connection.execute(
            select(_endpoints.c.id)
            .where(_endpoints.c.id == endpoint.id)
            .with_for_update(skip_locked=True)
        ).first()
        if locked is None:
            return []
        head = (
            select(d.id, d.next_attempt_at)
            .where(d.endpoint_id == endpoint.id, d.status.in_(UNFINISHED))
            .order_by(d.id)
            .limit(1)
        )
        first = connection.execute(head).first()
        if first is None or first.next_attempt_at > now:
            return []
        chosen = select(d.id).where(d.id == first.id).scalar_subquery()
    else:
        chosen = (
            select(d.id)
            .where(d.endpoint_id == endpoint.id, d.status.in_(UNFINISHED), d.next_attempt_at <= now)
            .order_by(d.next_attempt_at, d.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    claimed = connection.execute(
        update(_deliveries)
        .where(d.id.in_(chosen))
        .values(status="sending", attempts=d.attempts + 1, next_attempt_at=lease_end)
        .returning(d.id, d.attempts, d.message_id)
    ).all()
    if not claimed:
        return []
    messages = {
        row.id: row
        for row in connection.execute(
            select(_messages.c.id, _messages.c.uid, _messages.c.payload).where(
                _messages.c.id.in_([row.message_id for row in claimed])
            )
        )
    }
    jobs = [
        Job(
            row.id,
            row.attempts,
            endpoint,
            messages[row.message_id].uid,
            messages[row.message_id].payload,
        )
        for row in claimed
    ]
    return sorted(jobs, key=lambda job: job.delivery_id)


def lock_deliveries(connection: Connection, delivery_ids: Sequence[int]) -> set[int]:
    """Those of the deliveries that still exist (an endpoint may have been deleted), locked."""
    rows = connection.execute(
        select(_deliveries.c.id).where(_deliveries.c.id.in_(delivery_ids)).with_for_update()
    )
    return {row[0] for row in rows}


def lock_endpoints(connection: Connection, endpoint_ids: Sequence[int]) -> dict[int, EndpointRow]:
    rows = connection.execute(
        select(*_ENDPOINT_COLUMNS)
        .where(_endpoints.c.id.in_(sorted(set(endpoint_ids))))
        .order_by(_endpoints.c.id)
        .with_for_update()
    )
    return {row.id: _endpoint(row) for row in rows}


def finish_deliveries(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Write the outcome of attempts whose lease is still theirs (same attempt number)."""
    if not rows:
        return
    d = _deliveries.c
    connection.execute(
        update(_deliveries)
        .where(
            d.id == bindparam("delivery_id"),
            d.attempts == bindparam("attempt"),
            d.status == "sending",
        )
        .values(
            status=bindparam("new_status"),
            next_attempt_at=bindparam("new_next_attempt_at"),
            finished_at=bindparam("new_finished_at"),
            last_status_code=bindparam("new_status_code"),
            last_error=bindparam("new_error"),
        ),
        list(rows),
    )


def insert_attempts(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        connection.execute(insert(_attempts), list(rows))


def release(connection: Connection, jobs: Sequence[Job], now: datetime) -> None:
    """Give back claimed deliveries that were never sent (shutdown): due again now, and the
    attempt they were claimed for is not counted."""
    d = _deliveries.c
    for job in jobs:
        connection.execute(
            update(_deliveries)
            .where(d.id == job.delivery_id, d.attempts == job.attempt, d.status == "sending")
            .values(status="pending", attempts=d.attempts - 1, next_attempt_at=now)
        )


# -- reading and re-queueing ---------------------------------------------------------------

_DELIVERY_COLUMNS = (
    _deliveries.c.id,
    _deliveries.c.endpoint_id,
    _messages.c.uid,
    _messages.c.type,
    _deliveries.c.status,
    _deliveries.c.attempts,
    _deliveries.c.next_attempt_at,
    _deliveries.c.created_at,
    _deliveries.c.finished_at,
    _deliveries.c.last_status_code,
    _deliveries.c.last_error,
)


def deliveries(
    connection: Connection,
    endpoint_id: int,
    statuses: Sequence[str],
    before: int | None,
    limit: int,
) -> list[Any]:
    """The endpoint's deliveries, newest first."""
    query = (
        select(*_DELIVERY_COLUMNS)
        .join(_messages, _messages.c.id == _deliveries.c.message_id)
        .where(_deliveries.c.endpoint_id == endpoint_id)
        .order_by(_deliveries.c.id.desc())
        .limit(limit)
    )
    if statuses:
        query = query.where(_deliveries.c.status.in_(statuses))
    if before is not None:
        query = query.where(_deliveries.c.id < before)
    return list(connection.execute(query))


def delivery(connection: Connection, endpoint_id: int, delivery_id: int) -> Any | None:
    query = (
        select(*_DELIVERY_COLUMNS, _messages.c.payload)
        .join(_messages, _messages.c.id == _deliveries.c.message_id)
        .where(_deliveries.c.id == delivery_id, _deliveries.c.endpoint_id == endpoint_id)
    )
    return connection.execute(query).first()


def attempts(
    connection: Connection,
    endpoint_id: int,
    delivery_id: int | None,
    before: int | None,
    limit: int,
) -> list[Any]:
    """Attempts, newest first: the endpoint's, or one delivery's."""
    a = _attempts.c
    query = (
        select(
            a.id,
            a.delivery_id,
            a.attempted_at,
            a.duration_ms,
            a.status_code,
            a.response_body,
            a.error,
            a.succeeded,
        )
        .where(a.endpoint_id == endpoint_id)
        .order_by(a.id.desc())
        .limit(limit)
    )
    if delivery_id is not None:
        query = query.where(a.delivery_id == delivery_id)
    if before is not None:
        query = query.where(a.id < before)
    return list(connection.execute(query))


def requeue(connection: Connection, delivery_id: int, now: datetime) -> None:
    """Send again now with a fresh set of attempts (a delivery being sent is left alone)."""
    d = _deliveries.c
    connection.execute(
        update(_deliveries)
        .where(d.id == delivery_id, d.status != "sending")
        .values(status="pending", attempts=0, next_attempt_at=now, finished_at=None)
    )


def recover(
    connection: Connection,
    endpoint_id: int,
    since: datetime,
    until: datetime | None,
    now: datetime,
) -> int:
    """Re-queue the endpoint's failed deliveries created in [since, until)."""
    d = _deliveries.c
    conditions = [d.endpoint_id == endpoint_id, d.status == "failed", d.created_at >= since]
    if until is not None:
        conditions.append(d.created_at < until)
    result = connection.execute(
        update(_deliveries)
        .where(and_(*conditions))
        .values(status="pending", attempts=0, next_attempt_at=now, finished_at=None)
    )
    return int(result.rowcount)


def purge(connection: Connection, cutoff: datetime) -> int:
    """Forget messages older than the cutoff, with their deliveries and attempts, unless
    one of them is being sent right now."""
    sending = exists().where(
        _deliveries.c.message_id == _messages.c.id, _deliveries.c.status == "sending"
    )
    result = connection.execute(delete(_messages).where(_messages.c.created_at < cutoff, ~sending))
    return int(result.rowcount)
