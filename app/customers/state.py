"""The per-customer pattern as plain data, and how one event changes it.

Every update is commutative (sums, counts, minima, maxima, tallies), and the only pruning,
of weekly buckets older than a year before the last visit, depends on a maximum. So the same
events in any order give the same state, which is what makes late events and rebuilds safe.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

WEEKS_KEPT = 53  # the current week and the 52 before it
# Running totals stop at the amount column's range (1/10,000 units in 64 bits) instead of
# overflowing it: ~922 maximal purchases would otherwise make every later event of the
# customer fail. Saturating sums of non-negative amounts are still order-independent.
# (Python's integers would not overflow, but the columns and orjson hold 64 bits.)
TOTAL_CEILING = 2**63 - 1
# How many distinct categories, stores and staff members one pattern tallies: a customer's
# row is read and written on each of their events, and without a bound one customer sending
# new names made a 22 MB row that took a second per event. Names beyond a cap are not
# tallied (their purchases still count everywhere else); below the caps the state does not
# depend on the order of events, beyond them which names made it in does.
MAX_CATEGORIES = 500
MAX_STORES = 100
MAX_STAFF = 100
# The latest visit days kept exactly, for the rules' tests (the gaps between them show how
# regular a customer is; weekly counts cannot). Keeping the latest N of a set of days does
# not depend on the order the days arrive in.
RECENT_VISITS = 64
_MONDAY = date(1970, 1, 5)


def week_index(day: date) -> int:
    """Weeks since 1970-01-05, a Monday: the key of the weekly buckets."""
    return (day - _MONDAY).days // 7


def week_start(index: int) -> date:
    """The Monday that starts week `index` (the inverse of week_index)."""
    return _MONDAY + timedelta(weeks=index)


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What the pattern needs from one stored event."""

    kind: str  # "purchase" or "refund"
    day: date  # local calendar day of the event
    amount: int  # in 1/10,000 of the currency unit
    store_id: str
    categories: frozenset[str]
    new_visit: bool  # the first purchase of this customer on this day
    segment: str | None = None  # the segment the POS sent for the customer, if any
    staff_id: str | None = None  # who served the customer


@dataclass(slots=True)
class CustomerState:
    customer_id: str
    first_visit_on: date | None = None
    last_visit_on: date | None = None
    visit_days: int = 0
    purchases: int = 0
    refunds: int = 0
    purchase_amount: int = 0
    refund_amount: int = 0
    # Purchases on the first visit day: what the spend model leaves out (its mean is over
    # repeat visits only, as the first one says nothing about loyalty).
    first_visit_amount: int = 0
    weekly: dict[str, list[int]] = field(default_factory=dict)
    categories: dict[str, list[int | str]] = field(default_factory=dict)
    stores: dict[str, int] = field(default_factory=dict)
    home_store: str | None = None
    # {"<staff_id>": purchases served}, and who served the customer most
    staff: dict[str, int] = field(default_factory=dict)
    home_staff: str | None = None
    # The segment on the latest day one was sent (ties: the greatest name), and that day.
    segment: str | None = None
    segment_on: date | None = None
    # The latest RECENT_VISITS visit days, ISO, ascending.
    recent_days: list[str] = field(default_factory=list)
    # When the rules must look at this customer again if no event comes: set by the
    # evaluation, not by the events, so it takes no part in comparing patterns.
    next_check_at: datetime | None = field(default=None, compare=False)

    def apply(self, events: Iterable[EventFacts]) -> CustomerState:
        for event in events:
            if event.kind == "refund":
                self._refund(event)
            else:
                self._purchase(event)
        self._prune_weeks()
        self.home_store = _most(self.stores)
        self.home_staff = _most(self.staff)
        return self

    def _purchase(self, event: EventFacts) -> None:
        self.purchases += 1
        self.purchase_amount = _add(self.purchase_amount, event.amount)
        _tally(self.stores, event.store_id, MAX_STORES)
        if event.staff_id is not None:
            _tally(self.staff, event.staff_id, MAX_STAFF)
        if self.first_visit_on is None or event.day < self.first_visit_on:
            self.first_visit_amount = event.amount  # an earlier first visit replaces it
        elif event.day == self.first_visit_on:
            self.first_visit_amount = _add(self.first_visit_amount, event.amount)
        if event.segment is not None and (
            self.segment_on is None
            or (self.segment_on, self.segment or "") < (event.day, event.segment)
        ):
            self.segment, self.segment_on = event.segment, event.day
        day = event.day.isoformat()
        for category in sorted(event.categories):
            if category not in self.categories and len(self.categories) >= MAX_CATEGORIES:
                continue
            # [purchases, last day bought, first day bought]
            tally = self.categories.setdefault(category, [0, day, day])
            tally[0] = int(tally[0]) + 1
            tally[1] = max(str(tally[1]), day)
            tally[2] = min(str(tally[2]), day)
        bucket = self.weekly.setdefault(str(week_index(event.day)), [0, 0])
        bucket[1] = _add(bucket[1], event.amount)
        if event.new_visit:
            self.visit_days += 1
            bucket[0] += 1
            self._recent(day)
            self.first_visit_on = min(self.first_visit_on or event.day, event.day)
            self.last_visit_on = max(self.last_visit_on or event.day, event.day)

    def _recent(self, day: str) -> None:
        days = self.recent_days
        if day in days or (len(days) >= RECENT_VISITS and day < days[0]):
            return
        bisect.insort(days, day)
        if len(days) > RECENT_VISITS:
            del days[0]

    def _refund(self, event: EventFacts) -> None:
        self.refunds += 1
        self.refund_amount = _add(self.refund_amount, event.amount)
        bucket = self.weekly.setdefault(str(week_index(event.day)), [0, 0])
        bucket[1] = _add(bucket[1], -event.amount)

    def _prune_weeks(self) -> None:
        if self.last_visit_on is None:
            return
        oldest = week_index(self.last_visit_on) - (WEEKS_KEPT - 1)
        self.weekly = {week: tally for week, tally in self.weekly.items() if int(week) >= oldest}


def _tally(counts: dict[str, int], name: str, cap: int) -> None:
    if name in counts or len(counts) < cap:
        counts[name] = counts.get(name, 0) + 1


def _add(total: int, amount: int) -> int:
    """A saturating sum. A week's net amount can also fall to -TOTAL_CEILING; there, past a
    bound no till reaches, the order of purchases and refunds can matter."""
    return max(min(total + amount, TOTAL_CEILING), -TOTAL_CEILING)


def _most(tally: dict[str, int]) -> str | None:
    """The key with the highest count (ties: the smallest key), so order cannot matter."""
    return min(tally, key=lambda key: (-tally[key], key)) if tally else None
