"""the latest visit days of each customer; policies without the old rule fields

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 17:00:00

The rules became statistical tests with a false-alarm budget: the fields of the old fixed
thresholds are dropped from the stored policies (every other field keeps its value), and
each customer's latest 64 visit days are filled in from `customer_visit_days`.
"""

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECENT_VISITS = 64  # app.customers.state.RECENT_VISITS when this was written
DROPPED = {
    "inactivity": ("score_threshold", "gap_multiple"),
    "frequency_drop": ("recent_weeks", "baseline_weeks", "max_p_value"),
    "spend_drop": ("recent_weeks", "baseline_weeks"),
    "category_lapse": ("gap_multiple",),
}


def upgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("recent_days", sa.JSON(), nullable=False, server_default="[]")
        )
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            "SELECT customer_id, day FROM (SELECT customer_id, day, row_number() OVER "
            "(PARTITION BY customer_id ORDER BY day DESC) AS n FROM customer_visit_days) "
            "AS latest WHERE n <= :most"
        ),
        {"most": RECENT_VISITS},
    )
    days: dict[str, list[str]] = defaultdict(list)
    for customer_id, day in rows:
        days[customer_id].append(day if isinstance(day, str) else day.isoformat())
    if days:
        connection.execute(
            sa.text(
                "UPDATE customers SET recent_days = :days WHERE customer_id = :customer"
            ).bindparams(sa.bindparam("days", type_=sa.JSON)),
            [{"customer": customer, "days": sorted(found)} for customer, found in days.items()],
        )
    policies = connection.execute(sa.text("SELECT version, body FROM policies")).all()
    for version, body in policies:
        document: dict[str, Any] = orjson.loads(body) if isinstance(body, str | bytes) else body
        rules = document.get("rules") or {}
        for rule, fields in DROPPED.items():
            for name in fields:
                (rules.get(rule) or {}).pop(name, None)
        connection.execute(
            sa.text("UPDATE policies SET body = :body WHERE version = :version").bindparams(
                sa.bindparam("body", type_=sa.JSON)
            ),
            {"body": document, "version": version},
        )


def downgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("recent_days")
