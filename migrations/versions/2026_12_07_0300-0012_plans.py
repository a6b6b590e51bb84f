"""plans: what is done about the reason a customer gave

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 03:00:00

Resolving an alert with a reason opens a plan from the policy's playbook for that reason
(at most one open per customer and reason); the alert keeps the id of its plan.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.kit.db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", _ID, nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=300), nullable=False),
        sa.Column("owner", sa.String(length=16), nullable=False),
        sa.Column("store_id", sa.String(length=128), nullable=True),
        sa.Column("alert_id", _ID, nullable=False),
        sa.Column("opened_by", sa.String(length=100), nullable=False),
        sa.Column("opened_at", app.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("opened_on", sa.Date(), nullable=False),
        sa.Column("follow_up_on", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("closed_at", app.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=100), nullable=True),
        sa.Column("note", sa.String(length=2000), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name=op.f("fk_plans_alert_id_alerts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
    )
    op.create_index("ix_plans_alert_id", "plans", ["alert_id"])
    op.create_index("ix_plans_status_follow_up", "plans", ["status", "follow_up_on", "id"])
    op.create_index(
        "uq_plans_customer_reason_open",
        "plans",
        ["customer_id", "reason"],
        unique=True,
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    )
    # A nullable column: SQLite adds it in place (no table copy), PostgreSQL without a rewrite.
    op.add_column("alerts", sa.Column("plan_id", _ID, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("plan_id")
    op.drop_table("plans")
