"""What any detector could achieve on a synthetic chain: the statistical limit.

An oracle that is told what the service is not (the families the chain draws from and the
window in which defections happen) tests every customer for a change in that window with
likelihood-ratio statistics, on their whole history:

- **rate**: visits per day before and after a change day, Poisson (a fall only);
- **spend**: log spend per visit before and after, normal with the customer's own spread;
- **category**: for each category bought at least MIN_HABIT times before, the share of
  visits that included it before and after, Bernoulli (a fall only).

Each statistic is the largest over the candidate change days (every day of the window).
Their thresholds are set on the unchanged customers so that together they alarm
`false_alarms` of them (5 %), each the same share; the recall of each kind of defection is
then the share of its customers whose own statistic (rate for stops and halvers) crosses
its threshold. No detector that must also find the window itself can do better at that
false-alarm rate, up to the noise of a finite chain.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from app.synthetic.chain import DEFECTIONS, Chain, Kind, local_day

MIN_HABIT = 4
STATISTIC_FOR: Mapping[Kind, str] = {
    "stop": "rate",
    "halve": "rate",
    "spend_drop": "spend",
    "category_lapse": "category",
}
STATISTICS = ("rate", "spend", "category")


@dataclass(frozen=True, slots=True)
class Visit:
    day: date
    amount: float  # the day's purchases
    categories: frozenset[str]


def visits(events: Iterable[Mapping[str, Any]], until: date) -> dict[str, list[Visit]]:
    """Each customer's visit days before `until`, purchases of a day together."""
    days: dict[tuple[str, date], tuple[float, set[str]]] = {}
    for event in events:
        day = local_day(event)
        if event["kind"] != "purchase" or day >= until:
            continue
        key = (str(event["customer_id"]), day)
        amount, categories = days.get(key, (0.0, set()))
        categories |= {str(item["category"]) for item in event.get("items") or []}
        days[key] = (amount + float(event["amount"]), categories)
    found: dict[str, list[Visit]] = defaultdict(list)
    for (customer, day), (amount, categories) in sorted(days.items()):
        found[customer].append(Visit(day, amount, frozenset(categories)))
    return dict(found)


def _rate(history: Sequence[Visit], start: date, end: date, changes: Sequence[date]) -> float:
    first = history[0].day
    best = 0.0
    for change in changes:
        before_days = (change - first).days
        after_days = (end - change).days
        if before_days < 28 or after_days < 1:
            continue
        before = sum(1 for v in history[1:] if v.day < change)
        after = sum(1 for v in history if v.day >= change)
        if before == 0 or after / after_days >= before / before_days:
            continue
        rate = (before + after) / (before_days + after_days)
        statistic = before * math.log(before / before_days / rate)
        if after:
            statistic += after * math.log(after / after_days / rate)
        best = max(best, statistic)
    return best


def _spend(history: Sequence[Visit], changes: Sequence[date]) -> float:
    logs = [(v.day, math.log(v.amount)) for v in history if v.amount > 0]
    best = 0.0
    for change in changes:
        before = [y for day, y in logs if day < change]
        after = [y for day, y in logs if day >= change]
        if len(before) < 3 or len(after) < 2:
            continue
        mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
        if mean_after >= mean_before:
            continue
        squares = sum((y - mean_before) ** 2 for y in before)
        squares += sum((y - mean_after) ** 2 for y in after)
        variance = max(squares / (len(before) + len(after) - 2), 1e-6)
        weight = len(before) * len(after) / (len(before) + len(after))
        best = max(best, weight * (mean_before - mean_after) ** 2 / (2 * variance))
    return best


def _bernoulli(k: int, n: int) -> float:
    """The log-likelihood of k successes in n at their own share."""
    total = 0.0
    if k:
        total += k * math.log(k / n)
    if n - k:
        total += (n - k) * math.log((n - k) / n)
    return total


def _category(history: Sequence[Visit], changes: Sequence[date]) -> float:
    names = {name for v in history for name in v.categories}
    best = 0.0
    for change in changes:
        before = [v for v in history if v.day < change]
        after = [v for v in history if v.day >= change]
        if not after:
            continue
        for name in names:
            k1 = sum(name in v.categories for v in before)
            k2 = sum(name in v.categories for v in after)
            n1, n2 = len(before), len(after)
            if k1 < MIN_HABIT or k2 / n2 >= k1 / n1:
                continue
            statistic = _bernoulli(k1, n1) + _bernoulli(k2, n2) - _bernoulli(k1 + k2, n1 + n2)
            best = max(best, statistic)
    return best


def statistics(
    histories: Mapping[str, Sequence[Visit]], window: tuple[date, date], end: date
) -> dict[str, dict[str, float]]:
    """Every customer's three statistics, over change days in the window (a day apart)."""
    start, stop = window
    changes = [start + timedelta(days=n) for n in range((stop - start).days + 1)]
    found = {}
    for customer, history in histories.items():
        found[customer] = {
            "rate": _rate(history, start, end, changes),
            "spend": _spend(history, changes),
            "category": _category(history, changes),
        }
    return found


@dataclass(frozen=True, slots=True)
class Limit:
    thresholds: Mapping[str, float]
    false_alarms: float  # share of the unchanged customers alarmed by any statistic
    recall: Mapping[Kind, float]
    customers: Mapping[Kind, int]


def limit(
    chain: Chain,
    unchanged: Iterable[str],
    *,
    end: date | None = None,
    false_alarms: float = 0.05,
) -> Limit:
    """The oracle's recall per kind at `false_alarms` among the `unchanged` customers, as of
    `end` (default the chain's end)."""
    spec = chain.spec
    end = end or spec.end
    low, high = spec.defection_window
    window = (
        spec.start + timedelta(days=math.floor(low * spec.days)),
        spec.start + timedelta(days=math.floor(high * spec.days)),
    )
    histories = visits(chain.events, end)
    found = statistics(histories, window, end)
    calm = [found[c] for c in unchanged if c in found]
    thresholds = _thresholds(calm, false_alarms)
    alarmed = sum(any(s[name] > thresholds[name] for name in STATISTICS) for s in calm)
    recall: dict[Kind, float] = {}
    members: dict[Kind, int] = {}
    for kind in DEFECTIONS:
        ids = [t.customer_id for t in chain.truth.values() if t.kind == kind]
        name = STATISTIC_FOR[kind]
        caught = sum(found.get(c, {}).get(name, 0.0) > thresholds[name] for c in ids)
        recall[kind] = caught / len(ids) if ids else 0.0
        members[kind] = len(ids)
    return Limit(thresholds, alarmed / len(calm) if calm else 0.0, recall, members)


def _thresholds(calm: Sequence[Mapping[str, float]], target: float) -> dict[str, float]:
    """Per-statistic thresholds that each alarm the same share of `calm`, chosen as the
    largest share whose union stays within `target`."""
    ordered = {name: sorted((s[name] for s in calm), reverse=True) for name in STATISTICS}

    def at(share: float) -> dict[str, float]:
        count = math.floor(share * len(calm))
        return {
            name: values[count] if count < len(values) else 0.0 for name, values in ordered.items()
        }

    low, high = 0.0, target
    for _ in range(40):
        middle = (low + high) / 2
        chosen = at(middle)
        union = sum(any(s[n] > chosen[n] for n in STATISTICS) for s in calm) / len(calm)
        low, high = (middle, high) if union <= target else (low, middle)
    return at(low)
