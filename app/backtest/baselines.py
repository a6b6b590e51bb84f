"""Two simple ways of calling defectors, for comparison with the policy's rules.

Both run on the purchase history the replay read, on the replay's own simulated days (the
last day of each step, when the replay's sweeper ran), and only for the customers the rules
may alert: loyal by the policy (at least `loyalty.min_visits` visit days, and
`loyalty.min_tenure_days` since the first) and not already lost (silent no longer than
`loyalty.lost_after_days`). Like a rule's, a baseline's alert opens on the first simulated
day its condition holds for an eligible customer, stays open while the condition holds, and
may open again once it has stopped holding. The report judges their alerts exactly as it
judges the rules'.

- recency: a customer silent for at least k times their own mean gap between visit days
  ((last - first) / (visit days - 1), over the visits so far). One alert per silence.
- purchase count: a customer whose visit days in the last H days (the horizon) are fewer
  than half of their visit days in the H days before.

They ignore the policy's exclusions and `min_value_at_risk` (the purchase list carries no
store, segment or value), and have no value model, so no value at risk.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from app.policy.schemas import Loyalty

TENTHS = 10  # k is searched and reported in steps of 0.1
FIXED_K = (2, 3)  # the recency baselines always reported
MAX_K_TENTHS = 200  # the matched k is at most 20


@dataclass(frozen=True, slots=True)
class Days:
    """The simulated days of a replay: the last day of each of its steps."""

    first: date
    step_days: int
    steps: int

    def at_or_after(self, day: date) -> date | None:
        """The first simulated day on or after `day` (None: after the replay's end)."""
        offset = (day - self.first).days
        index = max(0, (offset + self.step_days) // self.step_days - 1)
        if index >= self.steps:
            return None
        return self.first + timedelta(days=(index + 1) * self.step_days - 1)


def recency(
    history: Mapping[str, Sequence[date]], days: Days, loyalty: Loyalty, k_tenths: int
) -> dict[str, list[date]]:
    """Each customer's recency alerts at k = k_tenths / 10: the simulated days they opened."""
    return {
        customer: opened
        for customer, visits in history.items()
        if len(visits) >= loyalty.min_visits
        and (opened := _recency(visits, days, loyalty, k_tenths))
    }


def _recency(visits: Sequence[date], days: Days, loyalty: Loyalty, k_tenths: int) -> list[date]:
    first = visits[0]
    loyal_from = first + timedelta(days=loyalty.min_tenure_days)
    lost_after = loyalty.lost_after_days
    opened: list[date] = []
    # Silence j follows the (j + 1)-th visit day; it can raise an alert once the customer
    # has the loyalty visits and a gap to compare it with.
    for j in range(max(loyalty.min_visits, 2) - 1, len(visits)):
        last = visits[j]
        span = (last - first).days
        # silent >= k x span / j, in whole days: the ceiling, in integers (no rounding).
        wait = -(-k_tenths * span // (TENTHS * j))
        day = days.at_or_after(max(last + timedelta(days=wait), loyal_from))
        if day is None:
            continue  # not before the replay's end (a later, shorter wait may be)
        if j + 1 < len(visits) and day >= visits[j + 1]:
            continue  # back before the silence was long enough (or the customer loyal)
        if lost_after is not None and (day - last).days > lost_after:
            continue  # already lost by then: the rules open nothing either
        opened.append(day)
    return opened


def count_drop(
    history: Mapping[str, Sequence[date]], days: Days, loyalty: Loyalty, horizon_days: int
) -> dict[str, list[date]]:
    """Each customer's purchase-count alerts: the simulated days they opened."""
    return {
        customer: opened
        for customer, visits in history.items()
        if len(visits) >= loyalty.min_visits
        and (opened := _count_drop(visits, days, loyalty, horizon_days))
    }


def _count_drop(
    visits: Sequence[date], days: Days, loyalty: Loyalty, horizon_days: int
) -> list[date]:
    window = timedelta(days=horizon_days)
    loyal_from = visits[0] + timedelta(days=loyalty.min_tenure_days)
    # The answer can change only when a visit enters the recent window (its day), moves to
    # the earlier one (H days later) or leaves it (2H), or when tenure comes: evaluate on
    # the first simulated day on or after each of those, in order.
    changes: set[date] = {loyal_from}
    for visit in visits:
        changes.update((visit, visit + window, visit + 2 * window))
    moments = sorted({day for day in map(days.at_or_after, changes) if day is not None})
    opened: list[date] = []
    is_open = False
    for day in moments:
        known = bisect.bisect_right(visits, day)
        if known == 0:
            continue
        recent = known - bisect.bisect_right(visits, day - window)
        before = known - recent - bisect.bisect_right(visits, day - 2 * window)
        firing = 2 * recent < before
        if firing and not is_open and _eligible(visits, known, day, loyal_from, loyalty):
            opened.append(day)
            is_open = True
        elif not firing:
            is_open = False
    return opened


def _eligible(
    visits: Sequence[date], known: int, day: date, loyal_from: date, loyalty: Loyalty
) -> bool:
    lost_after = loyalty.lost_after_days
    return (
        known >= loyalty.min_visits
        and day >= loyal_from
        and (lost_after is None or (day - visits[known - 1]).days <= lost_after)
    )


def matched_k(
    history: Mapping[str, Sequence[date]], days: Days, loyalty: Loyalty, target: int
) -> int:
    """The k (in tenths) at which the recency baseline raises about `target` alerts: the
    smallest k raising no more, or 0.1 less if that comes strictly closer. The count falls
    as k grows (every silence must last longer), so a bisection finds it."""

    @functools.cache
    def alerts(tenths: int) -> int:
        return _total(recency(history, days, loyalty, tenths).values())

    low, high = 1, MAX_K_TENTHS
    if alerts(low) <= target:
        return low
    if alerts(high) > target:
        return high
    while high - low > 1:  # alerts(low) > target >= alerts(high)
        middle = (low + high) // 2
        if alerts(middle) <= target:
            high = middle
        else:
            low = middle
    return low if alerts(low) - target < target - alerts(high) else high


def _total(alerts: Iterable[list[date]]) -> int:
    return sum(len(days) for days in alerts)
