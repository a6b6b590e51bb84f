"""who an alert is assigned to

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 00:00:00

The call list gives each alert an owner (a caller or a store manager); notes go into the
alert's history as feed events, so they need no table of their own.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column: SQLite adds it in place (no table copy), PostgreSQL without a rewrite.
    op.add_column("alerts", sa.Column("assigned_to", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("assigned_to")
