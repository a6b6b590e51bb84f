"""The quality reports as the API returns them."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field

from app.quality.profiles import ProfileRow
from app.quality.service import CalibrationRow, Degradation, Pooled, RuleRow, WeekRow


class ModelQualityReport(BaseModel):
    start: date
    end: date
    horizon_days: int = Field(description="H: each week's truth is no visit in [d, d + H)")
    weeks: list[WeekRow] = Field(
        description="Per snapshot Monday d in the span with d + H at most today"
    )
    calibration: list[CalibrationRow] = Field(
        description="Every week's customers together, by tenth of the predicted probability"
    )
    overall: Pooled = Field(description="Every week's customers together")
    rules_by_week: list[RuleRow] = Field(
        description="Alerts opened in each week, judged H days after they opened"
    )
    rules: list[RuleRow] = Field(description="The same over the span, per rule")
    degradation: Degradation = Field(
        description="The verdict on the span's latest week (the policy's `model_quality`)"
    )


class DefectorProfilesReport(BaseModel):
    start: date
    end: date
    lost: int = Field(description="Customers lost in the span")
    retained: int = Field(description="Customers loyal at its start, not lost, who visited")
    rows: list[ProfileRow]
