"""alert workflow

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 21:41:17.328802
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.kit.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_feed_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "purged_through", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_feed_state")),
    )
    op.execute("INSERT INTO alert_feed_state (id, purged_through) VALUES (1, 0)")
    with op.batch_alter_table("alert_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor", sa.String(length=100), nullable=True))

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("staff", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch_op.add_column(sa.Column("home_staff", sa.String(length=128), nullable=True))
    # Who served the customers stored before this revision comes from `radar rebuild`.

    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("acknowledged_at", app.kit.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("acknowledged_by", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("snoozed_until", app.kit.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("reason", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("note", sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column("contact_channel", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("escalated_at", app.kit.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_column("escalated_at")
        batch_op.drop_column("contact_channel")
        batch_op.drop_column("note")
        batch_op.drop_column("reason")
        batch_op.drop_column("resolved_by")
        batch_op.drop_column("snoozed_until")
        batch_op.drop_column("acknowledged_by")
        batch_op.drop_column("acknowledged_at")

    with op.batch_alter_table("alert_events", schema=None) as batch_op:
        batch_op.drop_column("actor")

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("home_staff")
        batch_op.drop_column("staff")

    op.drop_table("alert_feed_state")
