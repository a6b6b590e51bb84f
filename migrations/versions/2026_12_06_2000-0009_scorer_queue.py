"""the scorer's queue: events stored but not yet folded into their customer's pattern

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 20:00:00

Ingest only appends: each stored event gets a row here in the same transaction, and the
scorer folds, scores and publishes it later. Every event stored before this revision was
already folded, so the queue starts empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scorer_queue",
        sa.Column(
            "event_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("event_pk", name=op.f("pk_scorer_queue")),
    )
    op.create_index("ix_scorer_queue_customer_id", "scorer_queue", ["customer_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_scorer_queue_customer_id", table_name="scorer_queue")
    op.drop_table("scorer_queue")
