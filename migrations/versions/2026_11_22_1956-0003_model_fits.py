"""model fits

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 19:56:22.558006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.kit.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "model_fits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("r", sa.Float(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("a", sa.Float(), nullable=False),
        sa.Column("b", sa.Float(), nullable=False),
        sa.Column("log_likelihood", sa.Float(), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("converged", sa.Boolean(), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("fitted_at", app.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_fits")),
    )
    with op.batch_alter_table("model_fits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_fits_fitted_at"), ["fitted_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("model_fits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_fits_fitted_at"))

    op.drop_table("model_fits")
