"""model quality: feed events without an alert, and the weeks announced as degraded

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 04:00:00

The change feed also carries `model.degraded`, which concerns no alert and no customer: its
`alert_id` and `customer_id` become nullable (every alert change still sets both). Each
matured week found degraded is announced once, whatever the number of replicas: the week
is the primary key of `model_quality_alarms`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.kit.db

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite copies the table to drop NOT NULL; PostgreSQL only changes the catalogue.
    with op.batch_alter_table("alert_events") as batch:
        batch.alter_column("alert_id", existing_type=sa.BigInteger(), nullable=True)
        batch.alter_column("customer_id", existing_type=sa.String(128), nullable=True)
    op.create_table(
        "model_quality_alarms",
        sa.Column("week", sa.Date(), nullable=False),
        sa.Column("announced_at", app.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("week", name=op.f("pk_model_quality_alarms")),
    )


def downgrade() -> None:
    op.drop_table("model_quality_alarms")
    op.execute("DELETE FROM alert_events WHERE alert_id IS NULL OR customer_id IS NULL")
    with op.batch_alter_table("alert_events") as batch:
        batch.alter_column("customer_id", existing_type=sa.String(128), nullable=False)
        batch.alter_column("alert_id", existing_type=sa.BigInteger(), nullable=False)
