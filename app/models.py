"""Every ORM model, in one module so that Alembic sees the whole schema."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
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
    __table_args__ = (Index("ix_purchase_events_customer_occurred", "customer_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    store_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
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
