"""Every customer's scores as of a day, as CSV: for analysts and the quality benchmark."""

from __future__ import annotations

import csv
from datetime import date
from typing import IO

from sqlalchemy import Connection

from app.customers.service import states_as_of
from app.kit.text import spreadsheet_text
from app.policy import service as policies
from app.scoring import service as scoring

COLUMNS = (
    "customer_id",
    "first_visit_on",
    "last_visit_on",
    "visit_days",
    "days_since_last_visit",
    "p_alive",
    "p_no_purchase_within",
    "expected_purchases",
    "expected_gap_days",
    "expected_spend_per_visit",
    "value_at_risk",
)


def export_scores(connection: Connection, as_of: date, out: IO[str]) -> int:
    """Write one row per customer seen by `as_of` (patterns rebuilt from the events up to
    that day, scored with the current model and policy); returns the row count."""
    policy = policies.current(connection).body
    model = scoring.current_model(connection)
    states = sorted(states_as_of(connection, as_of), key=lambda state: state.customer_id)
    scores = scoring.score_many(
        states,
        model.params,
        as_of,
        policy.horizon_days,
        spend=model.spend,
        value=scoring.ValueSettings(policy.value.horizon_days, policy.value.annual_discount_rate),
    )
    writer = csv.writer(out)
    writer.writerow(["as_of", "horizon_days", "model", *COLUMNS])
    rows = 0
    for state, score in zip(states, scores, strict=True):
        if score is None:
            continue  # no visit yet (only refunds)
        writer.writerow(
            [
                as_of.isoformat(),
                policy.horizon_days,
                model.source,
                spreadsheet_text(state.customer_id),
                state.first_visit_on,
                state.last_visit_on,
                state.visit_days,
                score.days_since_last_visit,
                f"{score.p_alive:.6f}",
                f"{score.p_no_purchase_within:.6f}",
                f"{score.expected_purchases:.6f}",
                "" if score.expected_gap_days is None else f"{score.expected_gap_days:.3f}",
                f"{score.expected_spend_per_visit:.4f}",
                f"{score.value_at_risk:.4f}",
            ]
        )
        rows += 1
    return rows
