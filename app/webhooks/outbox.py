"""The transactional outbox: deliveries written in the transaction of the change they announce.

An alert change and the deliveries that announce it commit or roll back together, so no
alert is ever without its webhooks and no webhook tells of a change that did not happen.
The dispatcher sends them after the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast
from urllib.parse import quote

from sqlalchemy import Connection, Table, select

from app.alerts.repository import AlertRow, hold_sequence_lock
from app.kit.db import notify_after_commit, utcnow
from app.models import Alert, Customer
from app.webhooks import repository
from app.webhooks.repository import EndpointRow

_customers = cast(Table, Customer.__table__)
_alerts = cast(Table, Alert.__table__)
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2}
# How an alert can end with the customer back: they visited again, or staff won them back.
RECOVERIES = frozenset({"customer_returned", "won_back"})


def matches(filters: dict[str, Any], alert: AlertRow) -> bool:
    """Whether an alert passes an endpoint's filters (every filter that is set). Control
    cases of the outreach experiment reach only the endpoints that asked for them."""
    if (alert.arm or "contact") not in (filters.get("arms") or ("contact",)):
        return False
    stores, rules = filters.get("store_ids"), filters.get("rules")
    if stores is not None and alert.store_id not in stores:
        return False
    if rules is not None and alert.rule not in rules:
        return False
    severity = filters.get("min_severity")
    if severity is not None and SEVERITY_RANK[alert.severity] < SEVERITY_RANK[severity]:
        return False
    least = filters.get("min_value_at_risk")
    return least is None or alert.value_at_risk >= Decimal(str(least))


def enqueue_alert_events(
    connection: Connection,
    events: Sequence[tuple[str, AlertRow]],
    now: datetime,
    actor: str | None = None,
    customers: Mapping[str, dict[str, Any]] | None = None,
) -> None:
    """Deliveries of alert changes (and of `customer.recovered`) to subscribed endpoints.
    `customers`: the summaries (`customer_summary`) the caller already holds, by id."""
    endpoints = repository.list_endpoints(connection)
    if not endpoints or not events:
        return
    wanted: list[tuple[str, list[AlertRow], list[EndpointRow]]] = []
    for kind, alert in events:
        targets = [e for e in endpoints if kind in e.event_types and matches(e.filters, alert)]
        if targets:
            wanted.append((kind, [alert], targets))
    wanted += _recoveries(connection, events, endpoints)
    if not wanted:
        return
    summaries = _summaries(
        connection, {a.customer_id for _, alerts, _ in wanted for a in alerts}, customers or {}
    )
    messages = []
    for kind, alerts, targets in wanted:
        summary = summaries.get(alerts[0].customer_id)
        messages.append((kind, _alert_data(kind, alerts, summary, actor), targets))
    _write(connection, messages, now)


def enqueue_endpoint_disabled(connection: Connection, disabled: EndpointRow, now: datetime) -> None:
    """Tell the other endpoints that ask for it (ops channels) that one was disabled."""
    targets = [
        e
        for e in repository.list_endpoints(connection)
        if e.id != disabled.id and "endpoint.disabled" in e.event_types
    ]
    if not targets:
        return
    data = {
        "endpoint": {
            "id": disabled.id,
            "url": disabled.url,
            "description": disabled.description,
            "disabled_reason": disabled.disabled_reason,
            "disabled_at": _iso(disabled.disabled_at),
            "failing_since": _iso(disabled.failing_since),
        },
        "links": {"endpoint": f"/v1/webhooks/endpoints/{disabled.id}"},
    }
    _write(connection, [("endpoint.disabled", data, targets)], now)


def enqueue_model_degraded(connection: Connection, data: dict[str, Any], now: datetime) -> None:
    """Tell the endpoints that ask for it (ops channels) that the defection score degraded
    (`app.quality`): a message about the model, so alert filters do not apply."""
    targets = [
        e for e in repository.list_endpoints(connection) if "model.degraded" in e.event_types
    ]
    if targets:
        _write(connection, [("model.degraded", data, targets)], now)


def _recoveries(
    connection: Connection,
    events: Sequence[tuple[str, AlertRow]],
    endpoints: Sequence[EndpointRow],
) -> list[tuple[str, list[AlertRow], list[EndpointRow]]]:
    """`customer.recovered` once per customer whose alert ended with them back (returned or
    won back) and who has no unresolved alert left."""
    subscribed = [e for e in endpoints if "customer.recovered" in e.event_types]
    if not subscribed:
        return []
    ended: dict[str, list[AlertRow]] = {}
    for kind, alert in events:
        if kind == "alert.resolved" and alert.resolution in RECOVERIES:
            ended.setdefault(alert.customer_id, []).append(alert)
    if not ended:
        return []
    still_open = set(
        connection.scalars(
            select(_alerts.c.customer_id).where(
                _alerts.c.customer_id.in_(sorted(ended)), _alerts.c.resolved_at.is_(None)
            )
        )
    )
    found = []
    for customer, alerts in ended.items():
        if customer in still_open:
            continue
        targets = [e for e in subscribed if any(matches(e.filters, a) for a in alerts)]
        if targets:
            found.append(("customer.recovered", alerts, targets))
    return found


def customer_summary(
    customer_id: str,
    first_visit_on: date | None,
    last_visit_on: date | None,
    visit_days: int,
    home_store: str | None,
    segment: str | None,
    net_spend: Decimal,
) -> dict[str, Any]:
    """The customer as a webhook body shows them."""
    return {
        "customer_id": customer_id,
        "first_visit_on": _iso(first_visit_on),
        "last_visit_on": _iso(last_visit_on),
        "visit_days": visit_days,
        "home_store": home_store,
        "segment": segment,
        "net_spend": str(net_spend),
    }


def _summaries(
    connection: Connection, customer_ids: set[str], known: Mapping[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Summaries of the customers, read only for those the caller does not hold."""
    found = {c: known[c] for c in customer_ids if c in known}
    missing = customer_ids - set(found)
    if not missing:
        return found
    c = _customers.c
    query = select(
        c.customer_id,
        c.first_visit_on,
        c.last_visit_on,
        c.visit_days,
        c.home_store,
        c.segment,
        c.purchase_amount,
        c.refund_amount,
    ).where(c.customer_id.in_(sorted(missing)))
    for row in connection.execute(query):
        found[row.customer_id] = customer_summary(
            row.customer_id,
            row.first_visit_on,
            row.last_visit_on,
            row.visit_days,
            row.home_store,
            row.segment,
            row.purchase_amount - row.refund_amount,
        )
    return found


def _alert_data(
    kind: str, alerts: list[AlertRow], customer: dict[str, Any] | None, actor: str | None
) -> dict[str, Any]:
    customer_link = f"/v1/customers/{path_segment(alerts[0].customer_id)}"
    if kind == "customer.recovered":
        return {
            "customer": customer,
            "alerts": [alert.snapshot() for alert in alerts],
            "links": {"customer": customer_link},
        }
    alert = alerts[0]
    return {
        "alert": alert.snapshot(),
        "customer": customer,
        "evidence": alert.evidence,
        "value_at_risk": str(alert.value_at_risk),
        "actor": actor,
        "links": {"alert": f"/v1/alerts/{alert.id}", "customer": customer_link},
    }


def path_segment(value: str) -> str:
    """`value` as one segment of a URL path. Customer ids are the client's and may hold `/`,
    `?`, `#` or `%`; a whole `.` or `..` (which clients resolve away, and `quote` keeps)
    is written %2E too."""
    segment = quote(value, safe="")
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


def _write(
    connection: Connection,
    messages: Sequence[tuple[str, dict[str, Any], Sequence[EndpointRow]]],
    now: datetime,
) -> None:
    """Store the messages (stamped `now`, when the change happened) and one delivery per
    target, due at once by the wall clock the dispatchers run on."""
    # Delivery ids follow commit order (an ordered endpoint sends by id): the same lock as
    # the alert feed's sequence numbers, held until this transaction commits.
    hold_sequence_lock(connection)
    rows = []
    for kind, data, _ in messages:
        rows.append(
            {
                "uid": "msg_" + uuid.uuid4().hex,
                "type": kind,
                "payload": {"type": kind, "timestamp": now.isoformat(), "data": data},
                "created_at": utcnow(),
            }
        )
    ids = repository.insert_messages(connection, rows)
    notify_after_commit(connection)  # the dispatcher here need not wait for its next poll
    queued_at = utcnow()
    repository.insert_deliveries(
        connection,
        [
            {
                "endpoint_id": endpoint.id,
                "message_id": message_id,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": queued_at,
                "created_at": queued_at,
            }
            for message_id, (_, _, targets) in zip(ids, messages, strict=True)
            for endpoint in targets
        ],
    )


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())
