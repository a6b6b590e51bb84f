"""Every ORM model, in one module so that Alembic sees the whole schema."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, BigIntPK, Money, UTCDateTime

JSONType = JSON().with_variant(JSONB(), "postgresql")


class ApiKey(Base):
    """A credential; only its SHA-256 digest is stored, the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    scopes: Mapped[str] = mapped_column(String(100))  # space-separated
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class PurchaseEvent(Base):
    """A raw purchase or refund as a POS sent it: the source of truth for all derived state."""

    __tablename__ = "purchase_events"
    __table_args__ = (
        Index("ix_purchase_events_customer_occurred", "customer_id", "occurred_at"),
        # The refunds of a purchase, summed when another refund of it arrives.
        Index(
            "ix_purchase_events_refunds_event_id",
            "refunds_event_id",
            sqlite_where=text("refunds_event_id IS NOT NULL"),
            postgresql_where=text("refunds_event_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    store_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The calendar day where the purchase happened (from the offset the POS sent): a visit.
    occurred_on: Mapped[date] = mapped_column(Date)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    refunds_event_id: Mapped[str | None] = mapped_column(String(128))
    staff_id: Mapped[str | None] = mapped_column(String(128))
    items: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # BLAKE2b-128 of the canonical event: tells a retried duplicate from a conflicting reuse
    # of the same event_id without comparing every field.
    content_hash: Mapped[bytes] = mapped_column(LargeBinary(16))


class IdempotencyRecord(Base):
    """A stored response, replayed when a client retries with the same Idempotency-Key."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("api_key_id", "key"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    request_fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Customer(Base):
    """A customer's purchase pattern, kept current in the transaction that stores each event.

    Every field is a commutative summary of the customer's events (sums, counts, minima,
    maxima, per-week and per-category tallies), so the same events in any order give the same
    row, and `radar rebuild` can recompute it from `purchase_events`.
    """

    __tablename__ = "customers"
    # The sweeper reads only the customers that are due: an index range scan, never the table.
    __table_args__ = (Index("ix_customers_next_check_at", "next_check_at"),)

    customer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_visit_on: Mapped[date | None] = mapped_column(Date)
    last_visit_on: Mapped[date | None] = mapped_column(Date)
    visit_days: Mapped[int] = mapped_column(Integer)
    purchases: Mapped[int] = mapped_column(Integer)
    refunds: Mapped[int] = mapped_column(Integer)
    purchase_amount: Mapped[Decimal] = mapped_column(Money)
    refund_amount: Mapped[Decimal] = mapped_column(Money)
    # Purchases on the first visit day (the spend model averages repeat visits only).
    first_visit_amount: Mapped[Decimal] = mapped_column(Money, default=0)
    # Plain JSON (not JSONB) on PostgreSQL: rewritten whole on every update, never queried
    # inside, so parsing it into JSONB on each write would be wasted work.
    # {"<week index>": [visit days, net amount in 1/10,000]} for the last 53 weeks of visits
    weekly: Mapped[dict[str, list[int]]] = mapped_column(JSON)
    # {"<category>": [purchases, "<last day bought>", "<first day bought>"]}
    categories: Mapped[dict[str, list[Any]]] = mapped_column(JSON)
    # {"<store_id>": purchases}
    stores: Mapped[dict[str, int]] = mapped_column(JSON)
    home_store: Mapped[str | None] = mapped_column(String(128))
    # From the events' `attributes.segment`: the one sent on the latest day.
    segment: Mapped[str | None] = mapped_column(String(128))
    segment_on: Mapped[date | None] = mapped_column(Date)
    # When the rules must look again if no event comes (inactivity needs a clock); NULL
    # when nothing can change without a new event.
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # {"<staff_id>": purchases served}, and who served the customer most
    staff: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    home_staff: Mapped[str | None] = mapped_column(String(128))
    # ["<day>", ...]: the latest 64 visit days, ascending (the gaps between visits)
    recent_days: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ScorerQueue(Base):
    """Events stored but not yet folded into their customer's pattern: ingest appends a row
    in the transaction that stores the event, and the scorer deletes it in the transaction
    that folds it (exactly once, whatever order transactions commit in)."""

    __tablename__ = "scorer_queue"
    __table_args__ = (
        # The sweeper leaves customers with unfolded events alone: one probe per customer.
        Index("ix_scorer_queue_customer_id", "customer_id"),
    )

    # purchase_events.id (no foreign key: checking it would cost every insert a probe)
    event_pk: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=False)
    customer_id: Mapped[str] = mapped_column(String(128))
    # Set when the scorer could not fold this customer's events: not claimed before then.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CustomerVisitDay(Base):
    """One row per (customer, day) with a purchase: tells a new visit from a second purchase
    on the same day with one index probe, whatever order the events arrive in."""

    __tablename__ = "customer_visit_days"
    __table_args__ = (PrimaryKeyConstraint("customer_id", "day"),)

    customer_id: Mapped[str] = mapped_column(String(128))
    day: Mapped[date] = mapped_column(Date)


class ModelFit(Base):
    """A fitted population model: the newest one scores every customer."""

    __tablename__ = "model_fits"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    model: Mapped[str] = mapped_column(String(32))  # "pareto_nbd" ("bg_nbd" before 0004)
    # Pareto/NBD parameters, time in days: purchase rate ~ Gamma(r, alpha), drop-out rate
    # ~ Gamma(s, beta). BG/NBD fits of earlier versions kept a and b instead.
    r: Mapped[float] = mapped_column(Float)
    alpha: Mapped[float] = mapped_column(Float)
    s: Mapped[float | None] = mapped_column(Float)
    beta: Mapped[float | None] = mapped_column(Float)
    a: Mapped[float | None] = mapped_column(Float)
    b: Mapped[float | None] = mapped_column(Float)
    log_likelihood: Mapped[float] = mapped_column(Float)
    customers: Mapped[int] = mapped_column(Integer)
    converged: Mapped[bool] = mapped_column(Boolean)
    # Gamma-Gamma spend per visit (currency units), fitted on repeat customers with the
    # purchase model; NULL when there were too few, and spend falls back to each customer's mean.
    spend_p: Mapped[float | None] = mapped_column(Float)
    spend_q: Mapped[float | None] = mapped_column(Float)
    spend_gamma: Mapped[float | None] = mapped_column(Float)
    spend_customers: Mapped[int | None] = mapped_column(Integer)
    as_of: Mapped[date] = mapped_column(Date)
    fitted_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Policy(Base):
    """A version of the business's definition of defection; the newest one applies."""

    __tablename__ = "policies"

    version: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16))  # "api" or "file"
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Alert(Base):
    """A customer who crossed one rule of the policy; at most one unresolved per rule."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index(
            "uq_alerts_customer_rule_unresolved",
            "customer_id",
            "rule",
            unique=True,
            sqlite_where=text("resolved_at IS NULL"),
            postgresql_where=text("resolved_at IS NULL"),
        ),
        Index("ix_alerts_status_opened", "status", "opened_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), index=True)
    rule: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # open, acknowledged, snoozed, resolved
    severity: Mapped[str] = mapped_column(String(8))  # low, medium, high
    score: Mapped[float] = mapped_column(Float)
    value_at_risk: Mapped[Decimal] = mapped_column(Money)
    store_id: Mapped[str | None] = mapped_column(String(128))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONType)
    policy_version: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # customer_returned, condition_cleared or policy_changed (automatic), or the outcome
    # a person chose: won_back, lost, not_a_defection, not_worth_retaining
    resolution: Mapped[str | None] = mapped_column(String(32))
    # The work of people on the alert (NULL until they do it)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    snoozed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(64))  # why the customer left
    note: Mapped[str | None] = mapped_column(String(2000))
    contact_channel: Mapped[str | None] = mapped_column(String(32))
    # When nobody resolved an acknowledged alert in time and it was announced again.
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assigned_to: Mapped[str | None] = mapped_column(String(100))  # who is to call
    # The outreach experiment (policy `holdout`): "contact" (on the call list) or "control"
    # (tracked, never called); NULL while the holdout is 0. Every alert of a case shares the
    # arm of the alert that opened the case, whose id is `case_id`.
    arm: Mapped[str | None] = mapped_column(String(8))
    case_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), index=True
    )
    # The plan a person's resolution with a reason opened or joined (policy `playbooks`).
    # No foreign key: plans point at the alert that opened them, and a cycle of keys would
    # leave the tables without an order to create or drop them in.
    plan_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))


class Plan(Base):
    """What is being done about the reason a customer gave: opened from the policy's playbook
    when a person resolves an alert with that reason, closed as done or cancelled."""

    __tablename__ = "plans"
    __table_args__ = (
        # One open plan per customer and reason: resolving a customer's alerts together (the
        # page does it) opens one, and a later resolution with the same reason joins it.
        Index(
            "uq_plans_customer_reason_open",
            "customer_id",
            "reason",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_plans_status_follow_up", "status", "follow_up_on", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(300))
    owner: Mapped[str] = mapped_column(String(16))  # store, head_office
    store_id: Mapped[str | None] = mapped_column(String(128))  # the alert's (home) store
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)  # opened it
    opened_by: Mapped[str] = mapped_column(String(100))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The UTC day it opened: a visit on a later day is the customer coming back.
    opened_on: Mapped[date] = mapped_column(Date)
    follow_up_on: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))  # open, done, cancelled
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(String(2000))
    policy_version: Mapped[int] = mapped_column(Integer)


class AlertEvent(Base):
    """Every change of every alert, numbered in commit order: the feed pollers and webhooks
    follow. A transaction takes the numbering lock just before writing these rows and keeps
    it until it commits, so a smaller number never becomes visible after a larger one."""

    __tablename__ = "alert_events"

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # NULL (both) for a change that concerns no alert: `model.degraded`.
    alert_id: Mapped[int | None] = mapped_column(
        ForeignKey("alerts.id", ondelete="CASCADE"), index=True
    )
    customer_id: Mapped[str | None] = mapped_column(String(128))
    # alert.opened, .updated, .acknowledged, .snoozed, .resolved; model.degraded
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str | None] = mapped_column(String(100))  # NULL: the service itself
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    arm: Mapped[str | None] = mapped_column(String(8))  # the alert's (control: not to call)


class AlertFeedState(Base):
    """One row: the newest sequence number purged from `alert_events` (retention), so that a
    poller whose cursor is older can be told to resynchronise instead of missing events."""

    __tablename__ = "alert_feed_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    purged_through: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))


class ModelQualityAlarm(Base):
    """A matured week on which the defection score was found degraded: the week is the key,
    so that it is announced (feed event, webhook) once whatever the number of replicas."""

    __tablename__ = "model_quality_alarms"

    week: Mapped[date] = mapped_column(Date, primary_key=True)  # the snapshot Monday
    announced_at: Mapped[datetime] = mapped_column(UTCDateTime)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)  # what dropped, as announced


class WebhookEndpoint(Base):
    """Where a CRM or a staff channel wants alert changes delivered, signed with its secret."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500))
    event_types: Mapped[list[str]] = mapped_column(JSON)
    # {"store_ids": [...], "rules": [...], "min_severity": ..., "min_value_at_risk": "..."}
    filters: Mapped[dict[str, Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rate_limit: Mapped[float | None] = mapped_column(Float)  # deliveries per second
    ordered: Mapped[bool] = mapped_column(Boolean)  # FIFO: one delivery at a time, in order
    # Kept in clear: signing needs the key itself (unlike API keys, which are only checked).
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Health: since when every attempt failed, how many in a row, and the circuit breaker.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookMessage(Base):
    """One event to announce (`webhook-id` = uid), its body frozen when it happened."""

    __tablename__ = "webhook_messages"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    uid: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class WebhookDelivery(Base):
    """A message owed to one endpoint: the outbox row, written in the transaction of the
    change it announces, and the queue the dispatchers claim from."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "message_id"),
        # The queue, per endpoint: only unfinished deliveries are in this index.
        Index(
            "ix_webhook_deliveries_due",
            "endpoint_id",
            "next_attempt_at",
            sqlite_where=text("status IN ('pending', 'sending')"),
            postgresql_where=text("status IN ('pending', 'sending')"),
        ),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_messages.id", ondelete="CASCADE"), index=True
    )
    # pending (waiting for its next attempt), sending (claimed under a lease until
    # next_attempt_at), succeeded, failed (dead letter: every attempt failed)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))


class WebhookAttempt(Base):
    """One try of one delivery: what the receiver answered, or why there was no answer."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        Index("ix_webhook_attempts_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(String(1024))  # truncated
    error: Mapped[str | None] = mapped_column(String(500))
    succeeded: Mapped[bool] = mapped_column(Boolean)


class SetAsideItem(Base):
    """An item a background loop could not process (a customer the sweeper could not
    evaluate, say): kept out of the loop's way, with its error, until it succeeds or is
    retried."""

    __tablename__ = "set_aside_items"
    __table_args__ = (UniqueConstraint("loop", "item"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    loop: Mapped[str] = mapped_column(String(32))  # "sweeper", ...
    item: Mapped[str] = mapped_column(String(200))  # the loop's key: a customer id, ...
    error: Mapped[str] = mapped_column(String(500))
    failures: Mapped[int] = mapped_column(Integer)
    first_failed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime)
