"""each case's arm in the outreach experiment

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 02:00:00

With a holdout in the policy, a case (a customer's alerts from the first that opened while
none was unresolved) is contact (on the call list) or control (tracked, not called).
`case_id` is the id of the alert that opened the case; NULL for alerts opened before this.
The feed's rows carry the arm, so that a poller can leave control cases out.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns: SQLite adds them in place, PostgreSQL without a rewrite.
    op.add_column("alerts", sa.Column("arm", sa.String(8), nullable=True))
    op.add_column(
        "alerts", sa.Column("case_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"))
    )
    op.create_index("ix_alerts_case_id", "alerts", ["case_id"])
    # The feed carries the arm too, so that a poller can leave control cases out.
    op.add_column("alert_events", sa.Column("arm", sa.String(8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert_events") as batch:
        batch.drop_column("arm")
    op.drop_index("ix_alerts_case_id", "alerts")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("case_id")
        batch.drop_column("arm")
