"""policy, alerts and next checks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 20:14:52.294099
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import app.kit.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("value_at_risk", app.kit.db.Money(), nullable=False),
        sa.Column("store_id", sa.String(length=128), nullable=True),
        sa.Column(
            "evidence",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("opened_at", app.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", app.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alerts_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index("ix_alerts_status_opened", ["status", "opened_at"], unique=False)
        batch_op.create_index(
            "uq_alerts_customer_rule_unresolved",
            ["customer_id", "rule"],
            unique=True,
            sqlite_where=sa.text("resolved_at IS NULL"),
            postgresql_where=sa.text("resolved_at IS NULL"),
        )

    op.create_table(
        "policies",
        sa.Column("version", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", app.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_policies")),
    )
    op.create_table(
        "alert_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("alert_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", app.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name=op.f("fk_alert_events_alert_id_alerts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_alert_events")),
    )
    with op.batch_alter_table("alert_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_events_alert_id"), ["alert_id"], unique=False)

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "first_visit_amount",
                app.kit.db.Money(),
                nullable=False,
                server_default=sa.text("0"),
            )
        )
        batch_op.add_column(sa.Column("segment", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("segment_on", sa.Date(), nullable=True))
        batch_op.add_column(
            sa.Column("next_check_at", app.kit.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_customers_next_check_at", ["next_check_at"], unique=False)
    # Customers stored before this revision are due at once, so the sweeper evaluates them;
    # their first-visit spend, segment and categories' first days come from `radar rebuild`.
    op.execute("UPDATE customers SET next_check_at = CURRENT_TIMESTAMP")
    # BG/NBD fits of earlier versions are not Pareto/NBD ones: scores use the prior until the
    # next refit (RADAR_REFIT_INTERVAL, or `radar refit`).
    op.execute("DELETE FROM model_fits")

    with op.batch_alter_table("model_fits", schema=None) as batch_op:
        batch_op.add_column(sa.Column("s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("beta", sa.Float(), nullable=True))
        batch_op.alter_column("a", existing_type=sa.Float(), nullable=True)
        batch_op.alter_column("b", existing_type=sa.Float(), nullable=True)
        batch_op.add_column(sa.Column("spend_p", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("spend_q", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("spend_gamma", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("spend_customers", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Pareto/NBD fits cannot be read as BG/NBD ones: the prior applies until the next refit.
    op.execute("DELETE FROM model_fits WHERE model <> 'bg_nbd'")
    with op.batch_alter_table("model_fits", schema=None) as batch_op:
        batch_op.drop_column("spend_customers")
        batch_op.drop_column("spend_gamma")
        batch_op.drop_column("spend_q")
        batch_op.drop_column("spend_p")
        batch_op.alter_column("b", existing_type=sa.Float(), nullable=False)
        batch_op.alter_column("a", existing_type=sa.Float(), nullable=False)
        batch_op.drop_column("beta")
        batch_op.drop_column("s")

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index("ix_customers_next_check_at")
        batch_op.drop_column("next_check_at")
        batch_op.drop_column("segment_on")
        batch_op.drop_column("segment")
        batch_op.drop_column("first_visit_amount")

    with op.batch_alter_table("alert_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_events_alert_id"))

    op.drop_table("alert_events")
    op.drop_table("policies")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_alerts_customer_rule_unresolved",
            sqlite_where=sa.text("resolved_at IS NULL"),
            postgresql_where=sa.text("resolved_at IS NULL"),
        )
        batch_op.drop_index("ix_alerts_status_opened")
        batch_op.drop_index(batch_op.f("ix_alerts_customer_id"))

    op.drop_table("alerts")
