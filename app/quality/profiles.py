"""Defector profiles: how the customers lost in a span differ from those retained.

- **Lost** in [start, end): customers with an alert people resolved as `lost` then, and
  loyal customers who passed the policy's already-lost age then with no alert since their
  last visit (`lost_uncalled` of the defection-rate report).
- **Retained**: customers loyal at `start` (the defection-rate report's definition: the
  policy's visits and tenure, and a visit within the year before), not lost in the span,
  who visited in it.

Each dimension splits both groups: the home store, the segment, the first visit's spend (in
quartile bands of every customer's first-visit spend, with each band's bounds), the tenure
at `start`, and each category the customer ever bought (there a customer counts in every
category they bought, so the shares do not add up to 1).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import numpy as np
from sqlalchemy import Connection, select

from app.models import CustomerVisitDay
from app.policy.schemas import PolicyBody
from app.quality import repository
from app.quality.repository import Profile
from app.reports import service as reports

# Tenure bands at the span's start, in days: [lower, upper] inclusive (None: no upper).
TENURE_BANDS: tuple[tuple[str, int, int | None], ...] = (
    ("under 6 months", 0, 182),
    ("6 to 12 months", 183, 365),
    ("1 to 2 years", 366, 730),
    ("2 years or more", 731, None),
)
_DIGITS = 4


@dataclass(frozen=True, slots=True)
class ProfileRow:
    dimension: str  # home_store, segment, first_visit_spend, tenure, category
    value: str | None  # None: the customers without one (no segment, say)
    lower: float | None  # a band's bounds: spend in currency units, tenure in days
    upper: float | None
    lost: int
    retained: int
    lost_share: float | None  # of the lost customers, the share with this value
    retained_share: float | None
    defection_rate: float | None  # lost / (lost + retained)


def _instant(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def groups(
    connection: Connection, policy: PolicyBody, start: date, end: date
) -> tuple[set[str], set[str]]:
    """The customers lost in [start, end), and those retained."""
    rows = connection.execute(
        select(CustomerVisitDay.customer_id, CustomerVisitDay.day).where(CustomerVisitDay.day < end)
    )
    visits: dict[str, list[date]] = defaultdict(list)
    for customer, day in rows:
        visits[customer].append(day)
    lost = repository.lost_alerts(connection, _instant(start), _instant(end))
    for customer, _, at in reports.lost_uncalled(connection, visits, policy):
        if start <= at.date() < end:
            lost.add(customer)
    retained = {
        customer
        for customer, days in visits.items()
        if customer not in lost
        and reports.loyal_at(days, start, policy)
        and any(start <= day < end for day in days)
    }
    return lost, retained


def rows(
    connection: Connection, lost: set[str], retained: set[str], start: date
) -> list[ProfileRow]:
    """Every dimension's rows, the most over-represented values among the lost first."""
    known = repository.profiles(connection)
    spend_bands = _quartile_bands(
        [p.first_visit_amount for p in known.values() if p.first_visit_on]
    )
    dimensions: list[tuple[str, Callable[[Profile], Iterable[_Value]]]] = [
        ("home_store", lambda p: [(p.home_store, None, None)]),
        ("segment", lambda p: [(p.segment, None, None)]),
        ("first_visit_spend", lambda p: _band_of(spend_bands, p)),
        ("tenure", lambda p: _tenure_of(p, start)),
        ("category", lambda p: [(c, None, None) for c in sorted(p.categories)]),
    ]
    found = []
    for name, values_of in dimensions:
        found += _dimension(name, values_of, known, lost, retained)
    return found


_Value = tuple[str | None, float | None, float | None]  # value, lower, upper


def _dimension(
    name: str,
    values_of: Callable[[Profile], Iterable[_Value]],
    known: dict[str, Profile],
    lost: set[str],
    retained: set[str],
) -> list[ProfileRow]:
    counts: dict[_Value, Counter[str]] = defaultdict(Counter)
    for group, customers in (("lost", lost), ("retained", retained)):
        for customer in customers:
            profile = known.get(customer)
            for value in values_of(profile) if profile else [(None, None, None)]:
                counts[value][group] += 1
    rows = [
        ProfileRow(
            name,
            value,
            lower,
            upper,
            tally["lost"],
            tally["retained"],
            _share(tally["lost"], len(lost)),
            _share(tally["retained"], len(retained)),
            _share(tally["lost"], tally["lost"] + tally["retained"]),
        )
        for (value, lower, upper), tally in counts.items()
    ]
    # The most over-represented among the lost first.
    rows.sort(key=lambda r: (-((r.lost_share or 0) - (r.retained_share or 0)), r.value or ""))
    return rows


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, _DIGITS) if whole else None


def _quartile_bands(amounts: list[float]) -> list[tuple[str, float, float]]:
    """Four bands (Q1 to Q4) cut at the quartiles (linear interpolation), each with its
    bounds: Q1 is [min, q1], Q2 (q1, q2], Q3 (q2, q3], Q4 (q3, max]."""
    if not amounts:
        return []
    cuts = [float(v) for v in np.quantile(np.array(amounts), [0.0, 0.25, 0.5, 0.75, 1.0])]
    return [(f"Q{k + 1}", cuts[k], cuts[k + 1]) for k in range(4)]


def _band_of(bands: list[tuple[str, float, float]], profile: Profile) -> list[_Value]:
    if profile.first_visit_on is None or not bands:
        return [(None, None, None)]
    chosen = next((b for b in bands if profile.first_visit_amount <= b[2]), bands[-1])
    label, lower, upper = chosen
    return [(label, round(lower, 4), round(upper, 4))]


def _tenure_of(profile: Profile, start: date) -> list[_Value]:
    if profile.first_visit_on is None:
        return [(None, None, None)]
    days = max((start - profile.first_visit_on).days, 0)
    for label, lower, upper in TENURE_BANDS:
        if upper is None or days <= upper:
            return [(label, float(lower), None if upper is None else float(upper))]
    raise AssertionError("the last band has no upper bound")
