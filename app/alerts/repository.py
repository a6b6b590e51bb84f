"""Alerts and their change feed: reads and writes inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update

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
            "resolved_at": self.resolved_at and self.resolved_at.isoformat(),
            "resolution": self.resolution,
        }


_COLUMNS = [_alerts.c[name] for name in AlertRow.__slots__]


def _row(values: Any) -> AlertRow:
    return AlertRow(**{name: values[i] for i, name in enumerate(AlertRow.__slots__)})


def unresolved(connection: Connection, customer_ids: Sequence[str]) -> list[AlertRow]:
    """The customers' alerts that are not resolved (at most one per rule each)."""
    found: list[AlertRow] = []
    ids = sorted(set(customer_ids))
    for start in range(0, len(ids), 900):  # below SQLite's bound-parameter limit
        chunk = ids[start : start + 900]
        query = select(*_COLUMNS).where(
            _alerts.c.customer_id.in_(chunk), _alerts.c.resolved_at.is_(None)
        )
        found.extend(_row(values) for values in connection.execute(query))
    return found


def for_customer(connection: Connection, customer_id: str, limit: int = 50) -> list[AlertRow]:
    query = (
        select(*_COLUMNS)
        .where(_alerts.c.customer_id == customer_id)
        .order_by(_alerts.c.opened_at.desc(), _alerts.c.id.desc())
        .limit(limit)
    )
    return [_row(values) for values in connection.execute(query)]


def insert_alerts(connection: Connection, rows: Sequence[dict[str, Any]]) -> list[AlertRow]:
    if not rows:
        return []
    result = connection.execute(
        insert(_alerts).returning(*_COLUMNS, sort_by_parameter_order=True), list(rows)
    )
    return [_row(values) for values in result]


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
            }
            for alert in alerts
        ],
    )


def record_events(
    connection: Connection, events: Sequence[tuple[str, AlertRow]], now: datetime
) -> None:
    """Append (type, alert) changes to the feed, numbered in commit order."""
    if not events:
        return
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock($1)", (ALERT_SEQUENCE_LOCK,))
    connection.execute(
        insert(_alert_events),
        [
            {
                "alert_id": alert.id,
                "customer_id": alert.customer_id,
                "type": kind,
                "occurred_at": now,
                "data": alert.snapshot(),
            }
            for kind, alert in events
        ],
    )
