"""customer pattern state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 19:39:17.340322
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.kit.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_visit_days",
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "day", name=op.f("pk_customer_visit_days")),
    )
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("first_visit_on", sa.Date(), nullable=True),
        sa.Column("last_visit_on", sa.Date(), nullable=True),
        sa.Column("visit_days", sa.Integer(), nullable=False),
        sa.Column("purchases", sa.Integer(), nullable=False),
        sa.Column("refunds", sa.Integer(), nullable=False),
        sa.Column("purchase_amount", app.kit.db.Money(), nullable=False),
        sa.Column("refund_amount", app.kit.db.Money(), nullable=False),
        sa.Column(
            "weekly",
            sa.JSON(),
            nullable=False,
        ),
        sa.Column(
            "categories",
            sa.JSON(),
            nullable=False,
        ),
        sa.Column(
            "stores",
            sa.JSON(),
            nullable=False,
        ),
        sa.Column("home_store", sa.String(length=128), nullable=True),
        sa.Column("updated_at", app.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customers")),
    )
    # Events stored before this revision did not keep their offset: their day is the UTC day.
    with op.batch_alter_table("purchase_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("occurred_on", sa.Date(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE purchase_events SET occurred_on = (occurred_at AT TIME ZONE 'UTC')::date"
        )
    else:
        op.execute("UPDATE purchase_events SET occurred_on = date(occurred_at)")
    with op.batch_alter_table("purchase_events", schema=None) as batch_op:
        batch_op.alter_column("occurred_on", existing_type=sa.Date(), nullable=False)
    # Customer state for events stored before this revision comes from `radar rebuild`.


def downgrade() -> None:
    with op.batch_alter_table("purchase_events", schema=None) as batch_op:
        batch_op.drop_column("occurred_on")

    op.drop_table("customers")
    op.drop_table("customer_visit_days")
