"""A synthetic retail chain whose defections are known in advance.

`generate(ChainSpec(...))` returns the purchases and refunds of a few stores' customers,
exactly as a POS posts them to /v1/purchases/batch and sorted by time, and the truth about
every customer: loyal, occasional, or a defector of one kind from a known day. `assess`
scores the alerts the service opened against that truth.

Regular customers have their own rhythm (a renewal process of gamma-distributed gaps around
their mean gap), spend (lognormal around their mean), home store, favourite staff member and
one to three habitual categories; some take a holiday, a few purchases are refunded.
Occasional customers come once or a few times, at random. Everything is drawn from numpy
generators seeded by the spec's seed and the customer's number, so a spec always gives the
same chain, and a customer's history does not depend on how many others there are.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any, Literal

import numpy as np

from app.policy.schemas import RULES, Rule

Kind = Literal["loyal", "occasional", "stop", "halve", "spend_drop", "category_lapse"]
DEFECTIONS: tuple[Kind, ...] = ("stop", "halve", "spend_drop", "category_lapse")
# The rule of the default policy meant to catch each kind of defection.
RULE_FOR: Mapping[Kind, Rule] = {
    "stop": "inactivity",
    "halve": "frequency_drop",
    "spend_drop": "spend_drop",
    "category_lapse": "category_lapse",
}
# The rules whose alert is the right call for each kind: a halver who has not come for a
# surprisingly long time is rightly called about the silence (it mutes the frequency rule).
RULES_FOR: Mapping[Kind, tuple[Rule, ...]] = {
    "stop": ("inactivity",),
    "halve": ("frequency_drop", "inactivity"),
    "spend_drop": ("spend_drop",),
    "category_lapse": ("category_lapse",),
}
CATEGORIES = (
    "bakery",
    "coffee",
    "fuel",
    "pharmacy",
    "grocery",
    "deli",
    "wine",
    "flowers",
    "newspapers",
    "household",
)
STAFF_PER_STORE = 4
HOME_STORE_SHARE = 0.85  # of a regular's visits; the rest go to the other stores
FAVOURITE_STAFF_SHARE = 0.6
EXTRA_CATEGORY_RATE = 0.05  # a visit also buys something outside the customer's habits
SECOND_PURCHASE_RATE = 0.04  # another purchase later the same day: still one visit
SPEND_NOISE = 0.35  # sigma of the lognormal spend of a visit around the customer's mean


@dataclass(frozen=True, slots=True)
class ChainSpec:
    """What to generate. Defections happen in `defection_window` (fractions of the span),
    late enough for the rules' 26 baseline weeks and early enough for their 8 recent ones."""

    customers: int = 2000
    stores: int = 4
    start: date = date(2025, 11, 1)
    days: int = 365
    seed: int = 7
    defection_share: float = 0.25  # of the regular customers
    occasional_share: float = 0.2  # of all customers
    defection_window: tuple[float, float] = (0.55, 0.8)
    late_joiner_share: float = 0.3  # regulars whose first visit is in the first quarter
    holiday_share: float = 0.2  # regulars who stay away 10-24 days once (not a defection)
    refund_rate: float = 0.02  # of purchases
    currency: str = "EUR"
    utc_offset: timedelta = timedelta(hours=1)
    allow_future: bool = False  # events after today (the API refuses them)

    def __post_init__(self) -> None:
        if self.customers < 1 or self.stores < 1 or self.days < 28:
            raise ValueError("need at least 1 customer, 1 store and 28 days")
        shares = (self.defection_share, self.occasional_share, self.late_joiner_share)
        if not all(0 <= share <= 1 for share in (*shares, self.holiday_share, self.refund_rate)):
            raise ValueError("shares and rates must be between 0 and 1")
        low, high = self.defection_window
        if not 0 <= low < high <= 1:
            raise ValueError("defection_window must be (low, high) with 0 <= low < high <= 1")

    @property
    def end(self) -> date:
        """The day after the last day."""
        return self.start + timedelta(days=self.days)


@dataclass(frozen=True, slots=True)
class Truth:
    """What really happened to one customer."""

    customer_id: str
    kind: Kind
    defected_on: date | None  # the first day of the changed behaviour
    lapsed_category: str | None  # category_lapse: the category they stopped buying
    mean_gap_days: float  # their rhythm before any defection (occasional: the whole span)
    home_store: str

    @property
    def defector(self) -> bool:
        return self.defected_on is not None


@dataclass(frozen=True, slots=True)
class Chain:
    spec: ChainSpec
    events: tuple[dict[str, Any], ...]  # sorted by occurred_at, then event_id
    truth: Mapping[str, Truth]  # by customer_id

    def by_day(self) -> Iterator[tuple[date, list[dict[str, Any]]]]:
        """Every day of the span with its events (local days; empty days too)."""
        days: dict[date, list[dict[str, Any]]] = defaultdict(list)
        for event in self.events:
            days[local_day(event)].append(event)
        for offset in range(self.spec.days):
            day = self.spec.start + timedelta(days=offset)
            yield day, days.get(day, [])

    def by_customer(self) -> dict[str, list[dict[str, Any]]]:
        """Each customer's events in time order: whole histories, as the README advises
        loading history."""
        histories: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in self.events:
            histories[event["customer_id"]].append(event)
        return dict(histories)


def local_day(event: Mapping[str, Any]) -> date:
    """The calendar day at the till (the service takes visit days from the sent offset)."""
    return date.fromisoformat(str(event["occurred_at"])[:10])


def generate(spec: ChainSpec) -> Chain:
    """The chain the spec describes: the same spec always gives the same chain."""
    # The API refuses events from the future: the last day must be over at the tills.
    closing = datetime.combine(spec.end, time(), timezone(spec.utc_offset))
    if not spec.allow_future and closing > datetime.now(UTC):
        raise ValueError(f"the chain would end in the future ({closing}): set allow_future")
    kinds = _kinds(spec)
    timed: list[tuple[datetime, str, dict[str, Any]]] = []
    truth: dict[str, Truth] = {}
    for index, kind in enumerate(kinds):
        rng = np.random.default_rng([spec.seed, index + 1])
        profile = _profile(spec, index, kind, rng)
        truth[profile.customer_id] = profile.truth(spec)
        for when, event in _history(spec, profile, rng):
            timed.append((when, event["event_id"], event))
    timed.sort(key=lambda item: (item[0], item[1]))
    return Chain(spec, tuple(event for _, _, event in timed), truth)


def _kinds(spec: ChainSpec) -> list[Kind]:
    """Exact numbers of each kind (so a test knows how many to expect), in seeded order."""
    occasional = round(spec.customers * spec.occasional_share)
    defectors = round((spec.customers - occasional) * spec.defection_share)
    kinds: list[Kind] = ["occasional"] * occasional
    kinds += [DEFECTIONS[n % len(DEFECTIONS)] for n in range(defectors)]
    kinds += ["loyal"] * (spec.customers - len(kinds))
    order = np.random.default_rng([spec.seed, 0]).permutation(len(kinds))
    return [kinds[int(n)] for n in order]


@dataclass(slots=True)
class _Profile:
    customer_id: str
    kind: Kind
    home_store: int
    mean_gap: float  # days between visits
    regularity: float  # gamma shape of the gaps: 1 is a Poisson process, 4 fairly regular
    mean_spend: float
    categories: dict[str, float]  # habitual category -> chance of buying it on a visit
    hour: float  # usual local time of day
    staff: int  # favourite staff member at the home store
    segment: str | None
    first_visit: float  # days since the start
    defected: float | None = None  # days since the start
    lapsed: str | None = None
    slowdown: float = 1.0  # halve: the gap's multiplier after defecting
    spend_factor: float = 1.0  # spend_drop: the spend's multiplier after defecting
    holiday: tuple[float, float] | None = None

    def truth(self, spec: ChainSpec) -> Truth:
        defected_on = None
        if self.defected is not None:
            defected_on = spec.start + timedelta(days=math.floor(self.defected))
        return Truth(
            self.customer_id,
            self.kind,
            defected_on,
            self.lapsed,
            round(self.mean_gap, 1),
            _store(self.home_store),
        )


def _store(number: int) -> str:
    return f"store-{number + 1}"


def _profile(spec: ChainSpec, index: int, kind: Kind, rng: np.random.Generator) -> _Profile:
    customer_id = f"card-{index + 1:05d}"
    if kind == "occasional":
        return _occasional(spec, customer_id, rng)
    # Mean gaps of 3 to 30 days, most around a week or two (grocery, coffee, fuel).
    mean_gap = float(np.clip(2.0 + rng.gamma(2.0, 5.0), 3.0, 30.0))
    habits = 2 + int(rng.integers(0, 2)) if kind == "category_lapse" else int(rng.integers(1, 4))
    names = [str(name) for name in rng.choice(CATEGORIES, size=habits, replace=False)]
    late = rng.random() < spec.late_joiner_share
    profile = _Profile(
        customer_id=customer_id,
        kind=kind,
        home_store=int(rng.integers(0, spec.stores)),
        mean_gap=mean_gap,
        regularity=float(rng.uniform(1.0, 4.0)),
        mean_spend=float(np.clip(rng.lognormal(math.log(25.0), 0.6), 4.0, 400.0)),
        categories={name: float(rng.uniform(0.55, 0.95)) for name in names},
        hour=float(rng.uniform(7.0, 20.0)),
        staff=int(rng.integers(0, STAFF_PER_STORE)),
        segment=str(rng.choice(["member", "member", "gold"])) if rng.random() < 0.6 else None,
        first_visit=(rng.uniform(0, 0.25 * spec.days) if late else 0.0)
        + float(rng.uniform(0, mean_gap)),
    )
    if rng.random() < spec.holiday_share:
        begins = float(rng.uniform(0, spec.days))
        profile.holiday = (begins, begins + float(rng.uniform(10, 24)))
    if kind != "loyal":
        _defect(spec, profile, rng)
    return profile


def _occasional(spec: ChainSpec, customer_id: str, rng: np.random.Generator) -> _Profile:
    return _Profile(
        customer_id=customer_id,
        kind="occasional",
        home_store=int(rng.integers(0, spec.stores)),
        mean_gap=float(spec.days),
        regularity=1.0,
        mean_spend=float(np.clip(rng.lognormal(math.log(30.0), 0.7), 3.0, 500.0)),
        categories={str(rng.choice(CATEGORIES)): 1.0},
        hour=float(rng.uniform(8.0, 20.0)),
        staff=int(rng.integers(0, STAFF_PER_STORE)),
        segment=None,
        first_visit=float(rng.uniform(0, spec.days)),
    )


def _defect(spec: ChainSpec, profile: _Profile, rng: np.random.Generator) -> None:
    low, high = spec.defection_window
    profile.defected = float(math.floor(rng.uniform(low, high) * spec.days))
    if profile.kind == "halve":
        profile.slowdown = float(rng.uniform(2.0, 3.0))  # a half to a third of the visits
    elif profile.kind == "spend_drop":
        profile.spend_factor = float(rng.uniform(0.3, 0.4))
    elif profile.kind == "category_lapse":
        # The habit they were surest to keep: the one whose absence is clearest.
        profile.lapsed = max(profile.categories, key=lambda name: profile.categories[name])


def _visit_times(spec: ChainSpec, profile: _Profile, rng: np.random.Generator) -> list[float]:
    """Visit moments in days since the start: a renewal process around the rhythm."""
    if profile.kind == "occasional":
        count = 1 + int(rng.poisson(0.8))
        return sorted(float(t) for t in rng.uniform(0, spec.days, size=count))
    times: list[float] = []
    moment = profile.first_visit
    while moment < spec.days:
        after = profile.defected is not None and moment >= profile.defected
        if after and profile.kind == "stop":
            break
        if profile.holiday is not None and profile.holiday[0] <= moment < profile.holiday[1]:
            moment = profile.holiday[1] + float(rng.uniform(0, 2))
            continue
        times.append(moment)
        mean = profile.mean_gap * (profile.slowdown if after else 1.0)
        moment += float(rng.gamma(profile.regularity, mean / profile.regularity))
    return times


def _history(
    spec: ChainSpec, profile: _Profile, rng: np.random.Generator
) -> Iterator[tuple[datetime, dict[str, Any]]]:
    zone = timezone(spec.utc_offset)
    counter = 0
    for moment in _visit_times(spec, profile, rng):
        day = math.floor(moment)
        after = profile.defected is not None and day >= profile.defected
        store = _visit_store(spec, profile, rng)
        when = _at(spec, day, profile.hour + float(rng.normal(0, 1.2)), zone)
        purchases = [_purchase(spec, profile, rng, store, when, after, counter)]
        counter += 1
        if rng.random() < SECOND_PURCHASE_RATE:
            later = when + timedelta(minutes=int(rng.integers(10, 90)))
            if later.date() == when.date():
                purchases.append(_purchase(spec, profile, rng, store, later, after, counter))
                counter += 1
        for stamp, purchase in purchases:
            yield stamp, purchase
            if rng.random() < spec.refund_rate:
                refund = _refund(spec, purchase, stamp, rng, counter)
                counter += 1
                if refund is not None:
                    yield refund


def _visit_store(spec: ChainSpec, profile: _Profile, rng: np.random.Generator) -> int:
    if spec.stores == 1 or rng.random() < HOME_STORE_SHARE:
        return profile.home_store
    others = [n for n in range(spec.stores) if n != profile.home_store]
    return int(rng.choice(others))


def _at(spec: ChainSpec, day: int, hour: float, zone: timezone) -> datetime:
    """A moment of opening hours (06:30 to 21:30) on a day of the span, at the till's
    offset."""
    minutes = int(np.clip(hour, 6.5, 21.5) * 60)
    clock = time(minutes // 60, minutes % 60, int(minutes * 7 % 60))
    return datetime.combine(spec.start + timedelta(days=day), clock, zone)


def _purchase(
    spec: ChainSpec,
    profile: _Profile,
    rng: np.random.Generator,
    store: int,
    when: datetime,
    after: bool,
    counter: int,
) -> tuple[datetime, dict[str, Any]]:
    factor = profile.spend_factor if after else 1.0
    spend = profile.mean_spend * factor * rng.lognormal(-(SPEND_NOISE**2) / 2, SPEND_NOISE)
    cents = max(round(spend * 100), 50)
    lapsed = profile.lapsed if after else None
    categories = _basket(profile, rng, lapsed)
    own_staff = store == profile.home_store and rng.random() < FAVOURITE_STAFF_SHARE
    staff = profile.staff if own_staff else int(rng.integers(0, STAFF_PER_STORE))
    event: dict[str, Any] = {
        "event_id": f"{_store(store)}:{profile.customer_id}:{counter:04d}",
        "customer_id": profile.customer_id,
        "store_id": _store(store),
        "occurred_at": when.isoformat(),
        "amount": _money(cents),
        "currency": spec.currency,
        "kind": "purchase",
        "staff_id": f"{_store(store)}-staff-{staff + 1}",
        "items": _items(categories, cents, rng),
    }
    if profile.segment is not None:
        event["attributes"] = {"segment": profile.segment}
    return when, event


def _basket(profile: _Profile, rng: np.random.Generator, lapsed: str | None) -> list[str]:
    """The categories of one visit: each habit with its own chance, never the lapsed one,
    and now and then something else."""
    habits = {name: p for name, p in profile.categories.items() if name != lapsed}
    basket = [name for name, p in habits.items() if rng.random() < p]
    if not basket and habits:
        basket = [max(habits, key=lambda name: habits[name])]
    if rng.random() < EXTRA_CATEGORY_RATE:
        extra = str(rng.choice(CATEGORIES))
        if extra not in basket and extra != lapsed:
            basket.append(extra)
    return basket


def _items(categories: list[str], cents: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Line items whose amounts add up to the total exactly."""
    shares = rng.dirichlet(np.ones(len(categories)) * 2.0)
    amounts = [int(cents * float(share)) for share in shares]
    amounts[-1] += cents - sum(amounts)
    return [
        {"category": name, "amount": _money(amount)}
        for name, amount in zip(categories, amounts, strict=True)
    ]


def _refund(
    spec: ChainSpec,
    purchase: dict[str, Any],
    when: datetime,
    rng: np.random.Generator,
    counter: int,
) -> tuple[datetime, dict[str, Any]] | None:
    """A return of part or all of a purchase, within a week, at the same store."""
    later = when + timedelta(days=int(rng.integers(0, 8)), minutes=int(rng.integers(5, 120)))
    if later.date() >= spec.end:
        return None
    cents = _cents(purchase["amount"])
    refunded = max(int(cents * float(rng.uniform(0.2, 1.0))), 1)
    item = purchase["items"][0]
    refund = {
        "event_id": purchase["event_id"].rsplit(":", 1)[0] + f":{counter:04d}",
        "customer_id": purchase["customer_id"],
        "store_id": purchase["store_id"],
        "occurred_at": later.isoformat(),
        "amount": _money(refunded),
        "currency": spec.currency,
        "kind": "refund",
        "refunds_event_id": purchase["event_id"],
        "items": [{"category": item["category"], "amount": _money(refunded)}],
    }
    return later, refund


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _cents(amount: str) -> int:
    units, _, fraction = amount.partition(".")
    return int(units) * 100 + int(fraction or 0)


@dataclass(frozen=True, slots=True)
class OpenedAlert:
    """An alert the service opened, as much as the truth needs of it."""

    customer_id: str
    rule: Rule
    opened_on: date
    categories: tuple[str, ...] = ()  # category_lapse: the categories it names

    @classmethod
    def from_api(cls, alert: Mapping[str, Any]) -> OpenedAlert:
        """From an alert as the API returns it (GET /v1/alerts, the change feed)."""
        lapsed = alert.get("evidence", {}).get("lapsed") or []
        return cls(
            customer_id=str(alert["customer_id"]),
            rule=alert["rule"],
            opened_on=datetime.fromisoformat(str(alert["opened_at"])).date(),
            categories=tuple(str(entry["category"]) for entry in lapsed),
        )


@dataclass(frozen=True, slots=True)
class Detection:
    kind: Kind
    customers: int
    caught: int  # alerted on or after the defection by a rule meant for the kind
    caught_any: int  # ... by any rule
    median_delay_days: float | None  # from the defection to the rule's first alert

    @property
    def recall(self) -> float:
        return self.caught / self.customers if self.customers else 0.0

    @property
    def recall_any(self) -> float:
        return self.caught_any / self.customers if self.customers else 0.0


@dataclass(frozen=True, slots=True)
class Assessment:
    detections: Mapping[Kind, Detection]
    loyal: int
    false_alarms: int  # loyal customers with any alert
    false_alarms_by_rule: Mapping[Rule, int]  # loyal customers with an alert of the rule
    occasional: int
    occasional_alarms: int  # occasional customers with any alert

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarms / self.loyal if self.loyal else 0.0

    def false_alarm_rate_of(self, rule: Rule) -> float:
        return self.false_alarms_by_rule[rule] / self.loyal if self.loyal else 0.0


def assess(truth: Mapping[str, Truth], alerts: Iterable[OpenedAlert]) -> Assessment:
    """Which defectors the alerts caught (a category_lapse alert must name the lapsed
    category), and which loyal or occasional customers they alarmed for nothing."""
    by_customer: dict[str, list[OpenedAlert]] = defaultdict(list)
    for alert in alerts:
        by_customer[alert.customer_id].append(alert)
    detections = {}
    for kind in DEFECTIONS:
        members = [t for t in truth.values() if t.kind == kind]
        caught = [_caught(t, by_customer[t.customer_id]) for t in members]
        delays = [own for own, _ in caught if own is not None]
        detections[kind] = Detection(
            kind,
            len(members),
            len(delays),
            sum(any_ for _, any_ in caught),
            float(np.median(delays)) if delays else None,
        )
    loyal = [t.customer_id for t in truth.values() if t.kind == "loyal"]
    occasional = [t.customer_id for t in truth.values() if t.kind == "occasional"]
    return Assessment(
        detections=detections,
        loyal=len(loyal),
        false_alarms=sum(bool(by_customer[c]) for c in loyal),
        false_alarms_by_rule={
            rule: sum(any(a.rule == rule for a in by_customer[c]) for c in loyal) for rule in RULES
        },
        occasional=len(occasional),
        occasional_alarms=sum(bool(by_customer[c]) for c in occasional),
    )


def _caught(truth: Truth, alerts: list[OpenedAlert]) -> tuple[int | None, bool]:
    """Days from the defection to the first alert of the kind's rule (None: never), and
    whether any rule alerted since the defection."""
    defected_on = truth.defected_on
    assert defected_on is not None
    later = [a for a in alerts if a.opened_on >= defected_on]
    own = [
        (a.opened_on - defected_on).days
        for a in later
        if a.rule in RULES_FOR[truth.kind]
        and (truth.lapsed_category is None or truth.lapsed_category in a.categories)
    ]
    return min(own, default=None), bool(later)
