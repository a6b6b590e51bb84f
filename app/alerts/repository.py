"""Alerts and their change feed: reads and writes inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, insert, select, update

from app.models import Alert, AlertEvent

_alerts = cast(Table, Alert.__table__)
_alert_events = cast(Table, AlertEvent.__table__)
# Held from the first alert event a transaction writes until it commits, so sequence numbers
# become visible in order: a reader that has seen seq N will never later find an N - 1.
# (SQLite needs nothing: its one writer already commits in order.)
ALERT_SEQUENCE_LOCK = 0x52_41_44_52_01  # arbitrary, distinct from the migrations lock


@dataclass(slots=True)
class AlertRow:
    id: int
    customer_id: str
    rule: str
    status: str
    severity: str
    score: float
    value_at_risk: Decimal
    store_id: str | None
    evidence: dict[str, Any]
    policy_version: int
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    resolution: str | None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    snoozed_until: datetime | None = None
    resolved_by: str | None = None
    reason: str | None = None
    note: str | None = None
    contact_channel: str | None = None
    escalated_at: datetime | None = None
    assigned_to: str | None = None
    arm: str | None = None  # the outreach experiment's: contact, control (None: none ran)
    case_id: int | None = None  # the alert that opened the customer's case
    plan_id: int | None = None  # the plan its resolution opened or joined (app/plans)

    def snapshot(self) -> dict[str, Any]:
        """The alert as JSON, as it goes into the change feed and the API."""
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "rule": self.rule,
            "status": self.status,
            "severity": self.severity,
            "score": round(self.score, 4),
            "value_at_risk": str(self.value_at_risk),
            "store_id": self.store_id,
            "evidence": self.evidence,
            "policy_version": self.policy_version,
            "opened_at": self.opened_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "resolved_at": _iso(self.resolved_at),
            "resolution": self.resolution,
            "acknowledged_at": _iso(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by,
            "snoozed_until": _iso(self.snoozed_until),
            "resolved_by": self.resolved_by,
            "reason": self.reason,
            "note": self.note,
            "contact_channel": self.contact_channel,
            "escalated_at": _iso(self.escalated_at),
            "assigned_to": self.assigned_to,
            "arm": self.arm,
            "case_id": self.case_id,
            "plan_id": self.plan_id,
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


COLUMNS = [_alerts.c[name] for name in AlertRow.__slots__]


def to_alert(values: Any) -> AlertRow:
    return AlertRow(**{name: values[i] for i, name in enumerate(AlertRow.__slots__)})


def get(connection: Connection, alert_id: int) -> AlertRow | None:
    row = connection.execute(select(*COLUMNS).where(_alerts.c.id == alert_id)).first()
    return None if row is None else to_alert(row)


def save_workflow(connection: Connection, alert: AlertRow) -> None:
    """Write what people change on an alert (the evaluation writes the rest)."""
    connection.execute(
        update(_alerts)
        .where(_alerts.c.id == alert.id)
        .values(
            status=alert.status,
            updated_at=alert.updated_at,
            acknowledged_at=alert.acknowledged_at,
            acknowledged_by=alert.acknowledged_by,
            snoozed_until=alert.snoozed_until,
            resolved_at=alert.resolved_at,
            resolved_by=alert.resolved_by,
            resolution=alert.resolution,
            reason=alert.reason,
            note=alert.note,
            contact_channel=alert.contact_channel,
            assigned_to=alert.assigned_to,
            plan_id=alert.plan_id,
        )
    )


def unresolved(connection: Connection, customer_ids: Sequence[str]) -> list[AlertRow]:
    """The customers' alerts that are not resolved (at most one per rule each)."""
    found: list[AlertRow] = []
    ids = sorted(set(customer_ids))
    for start in range(0, len(ids), 900):  # below SQLite's bound-parameter limit
        chunk = ids[start : start + 900]
        query = select(*COLUMNS).where(
            _alerts.c.customer_id.in_(chunk), _alerts.c.resolved_at.is_(None)
        )
        found.extend(to_alert(values) for values in connection.execute(query))
    return found


def for_customer(connection: Connection, customer_id: str, limit: int = 50) -> list[AlertRow]:
    query = (
        select(*COLUMNS)
        .where(_alerts.c.customer_id == customer_id)
        .order_by(_alerts.c.opened_at.desc(), _alerts.c.id.desc())
        .limit(limit)
    )
    return [to_alert(values) for values in connection.execute(query)]


def manually_resolved(
    connection: Connection, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], datetime]:
    """For (customer, rule) pairs: when a person last resolved such an alert."""
    found: dict[tuple[str, str], datetime] = {}
    customers = sorted({customer for customer, _ in pairs})
    for start in range(0, len(customers), 900):
        query = (
            select(_alerts.c.customer_id, _alerts.c.rule, func.max(_alerts.c.resolved_at))
            .where(
                _alerts.c.customer_id.in_(customers[start : start + 900]),
                _alerts.c.resolved_by.is_not(None),
            )
            .group_by(_alerts.c.customer_id, _alerts.c.rule)
        )
        found.update(((c, r), at) for c, r, at in connection.execute(query) if at is not None)
    return found


def insert_alerts(connection: Connection, rows: Sequence[dict[str, Any]]) -> list[AlertRow]:
    if not rows:
        return []
    result = connection.execute(
        insert(_alerts).returning(*COLUMNS, sort_by_parameter_order=True), list(rows)
    )
    return [to_alert(values) for values in result]


def link_cases(connection: Connection, opened: Sequence[AlertRow]) -> None:
    """Give the alerts that opened new cases (no `case_id` yet) their case: the id of the
    customer's first one among them (they were inserted in rule order)."""
    opener: dict[str, int] = {}
    linked = []
    for alert in opened:
        if alert.case_id is None:
            alert.case_id = opener.setdefault(alert.customer_id, alert.id)
            linked.append({"alert_id": alert.id, "new_case_id": alert.case_id})
    if linked:
        connection.execute(
            update(_alerts)
            .where(_alerts.c.id == bindparam("alert_id"))
            .values(case_id=bindparam("new_case_id")),
            linked,
        )


def update_alerts(connection: Connection, alerts: Sequence[AlertRow]) -> None:
    """Write back the changed fields of alerts that were read and modified."""
    if not alerts:
        return
    statement = (
        update(_alerts)
        .where(_alerts.c.id == bindparam("alert_id"))
        .values(
            status=bindparam("new_status"),
            severity=bindparam("new_severity"),
            score=bindparam("new_score"),
            value_at_risk=bindparam("new_value_at_risk"),
            evidence=bindparam("new_evidence"),
            updated_at=bindparam("new_updated_at"),
            resolved_at=bindparam("new_resolved_at"),
            resolution=bindparam("new_resolution"),
            snoozed_until=bindparam("new_snoozed_until"),
            escalated_at=bindparam("new_escalated_at"),
        )
    )
    connection.execute(
        statement,
        [
            {
                "alert_id": alert.id,
                "new_status": alert.status,
                "new_severity": alert.severity,
                "new_score": alert.score,
                "new_value_at_risk": alert.value_at_risk,
                "new_evidence": alert.evidence,
                "new_updated_at": alert.updated_at,
                "new_resolved_at": alert.resolved_at,
                "new_resolution": alert.resolution,
                "new_snoozed_until": alert.snoozed_until,
                "new_escalated_at": alert.escalated_at,
            }
            for alert in alerts
        ],
    )


def hold_sequence_lock(connection: Connection) -> None:
    """Take the numbering lock until the transaction ends (re-entrant; PostgreSQL only)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock($1)", (ALERT_SEQUENCE_LOCK,))


def record_events(
    connection: Connection,
    events: Sequence[tuple[str, AlertRow]],
    now: datetime,
    actor: str | None = None,
) -> None:
    """Append (type, alert) changes to the feed, numbered in commit order."""
    if not events:
        return
    hold_sequence_lock(connection)
    connection.execute(
        insert(_alert_events),
        [
            {
                "alert_id": alert.id,
                "customer_id": alert.customer_id,
                "type": kind,
                "occurred_at": now,
                "actor": actor,
                "data": alert.snapshot(),
                "arm": alert.arm,
            }
            for kind, alert in events
        ],
    )
