"""People working an alert: acknowledge, assign, snooze, add a note, resolve with an outcome
and a reason.

Each action runs in one transaction that first locks the customer's row, the lock every
evaluation of the customer holds: so a person's change and the service's own (refresh,
automatic resolution) never overwrite each other, and every change is recorded in the feed
with who made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Connection, select

from app.alerts import repository
from app.alerts.repository import AlertRow
from app.customers import repository as customers
from app.kit.errors import Conflict, FieldError, NotFound, ValidationFailed
from app.models import Alert
from app.plans import service as plans
from app.webhooks import outbox

Action = Literal["acknowledge", "assign", "snooze", "note", "resolve"]
# Outcomes that say the customer was reached, so a reason is known.
NEEDS_REASON = frozenset({"won_back", "lost"})


@dataclass(frozen=True, slots=True)
class Change:
    action: Action
    actor: str
    until: datetime | None = None  # snooze
    # assign: to whom (None: unassign); acknowledge: who takes the case if nobody has it
    to: str | None = None
    outcome: str | None = None  # resolve
    reason: str | None = None
    note: str | None = None
    channel: str | None = None


def apply(
    connection: Connection,
    alert_id: int,
    change: Change,
    now: datetime,
    reasons: Sequence[str],
    escalate_after: timedelta = timedelta(0),
) -> AlertRow:
    alert = _lock(connection, alert_id)
    if alert.status == "resolved":
        how = f"as {alert.resolution}" if alert.resolution else ""
        raise Conflict(
            f"Alert {alert_id} was resolved {how} at {alert.resolved_at:%Y-%m-%d %H:%M} UTC; "
            "a resolved alert cannot change. A new lapse opens a new alert.",
            code="alert_resolved",
        )
    if change.action == "acknowledge":
        if alert.status == "acknowledged":
            raise Conflict(
                f"Alert {alert_id} was already acknowledged by {alert.acknowledged_by}.",
                code="already_acknowledged",
            )
        alert.status, alert.acknowledged_at, alert.acknowledged_by = (
            "acknowledged",
            now,
            change.actor,
        )
        alert.snoozed_until = None
        if change.to is not None and alert.assigned_to is None:
            alert.assigned_to = change.to  # one change, one feed event: "I'm calling"
        if escalate_after > timedelta(0):  # to announce it again if nobody resolves it
            customers.check_by(connection, alert.customer_id, now + escalate_after)
        kind = "alert.acknowledged"
    elif change.action == "assign":
        alert.assigned_to = change.to
        kind = "alert.assigned"
    elif change.action == "note":
        # The latest note is the alert's; each one stays in the history (its feed event).
        alert.note = change.note
        kind = "alert.noted"
    elif change.action == "snooze":
        assert change.until is not None
        if change.until <= now:
            raise ValidationFailed(
                "A snooze must end in the future.",
                errors=[_field("/until", "must be in the future", "past_snooze")],
            )
        alert.status, alert.snoozed_until = "snoozed", change.until
        customers.check_by(connection, alert.customer_id, change.until)  # to reopen it then
        kind = "alert.snoozed"
    else:
        _check_reason(change, reasons)
        alert.status, alert.resolved_at, alert.resolved_by = "resolved", now, change.actor
        alert.resolution, alert.reason = change.outcome, change.reason
        alert.note, alert.contact_channel = change.note, change.channel
        alert.snoozed_until = None
        if change.reason is not None:  # what to do about it: the policy's playbook
            alert.plan_id = plans.open_for_resolution(
                connection,
                customer_id=alert.customer_id,
                reason=change.reason,
                store_id=alert.store_id,
                alert_id=alert.id,
                actor=change.actor,
                now=now,
            )
        kind = "alert.resolved"
    alert.updated_at = now
    repository.save_workflow(connection, alert)
    repository.record_events(connection, [(kind, alert)], now, actor=change.actor)
    outbox.enqueue_alert_events(connection, [(kind, alert)], now, actor=change.actor)
    return alert


def _check_reason(change: Change, reasons: Sequence[str]) -> None:
    if change.outcome in NEEDS_REASON and change.reason is None:
        raise ValidationFailed(
            f"An alert resolved as {change.outcome} needs the reason the customer gave.",
            errors=[_field("/reason", f"required when outcome is {change.outcome}", "missing")],
        )
    if change.reason is not None and change.reason not in reasons:
        raise ValidationFailed(
            "Unknown reason.",
            errors=[
                _field(
                    "/reason",
                    f"must be one of: {', '.join(reasons)}",
                    "unknown_reason",
                )
            ],
        )


def _field(pointer: str, message: str, code: str) -> FieldError:
    return FieldError(pointer=pointer, code=code, message=message)


def _lock(connection: Connection, alert_id: int) -> AlertRow:
    """The alert, with its customer's row locked first (the order evaluations lock in)."""
    customer = connection.execute(
        select(Alert.customer_id).where(Alert.id == alert_id)
    ).scalar_one_or_none()
    if customer is None:
        raise NotFound(f"There is no alert {alert_id}.")
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(
            "SELECT 1 FROM customers WHERE customer_id = $1 FOR UPDATE", (customer,)
        )
    alert = repository.get(connection, alert_id)
    assert alert is not None  # alerts are never deleted while their customer is locked
    return alert
