"""Detection on the synthetic chain: the service's rules beside the statistical limit.

What is measured
    On a chain whose truth is known (app/synthetic: loyal customers who never change, and
    defectors who stop, halve their visits, cut their spend or drop a category, from a day
    in the last 20-45 % of the year):

    service   the default policy's rules (app/alerts/rules.py) applied to each customer's
              pattern as the service keeps it (app/customers/state.py), at the chain's
              end, and every Monday of the year for the yearly figure
    limit     an oracle told the generating families and the window of the defections:
              likelihood-ratio statistics for rate, log spend and category share, with
              thresholds that together alarm 5 % of the unchanged customers
              (app/synthetic/limit.py)
    P(alive)  Pareto/NBD (fitted on the chain) P(alive) < 0.3, the textbook BTYD rule

    False alarms: loyal customers (the policy's visits and tenure) whose pattern never
    changed, with an alert open at the end ("at one moment"), and with an alert at some
    Monday of the year (the yearly figure, service only). Recall: defectors of each kind
    caught at the end by the rule meant for the kind (stops: inactivity; halvers:
    frequency_drop or inactivity; spend: spend_drop; category: category_lapse naming the
    category), and by any rule.

    The service's numbers here come from the rules on the patterns, without the API; the
    end-to-end run through the API, a week of events at a time with the sweeper, is
    tests/test_synthetic.py, which checks the same targets.

Run (about a minute per 1,000 customers)
    .venv/bin/python bench/detection.py
    .venv/bin/python bench/detection.py --customers 1000 --seeds 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from app.alerts import rules
from app.customers.state import CustomerState, EventFacts
from app.kit.db import Money
from app.policy.schemas import PolicyBody, Rule
from app.scoring import pareto
from app.scoring.service import PRIOR, score_many
from app.synthetic.chain import DEFECTIONS, Chain, ChainSpec, Kind, Truth, generate, local_day
from app.synthetic.limit import limit

START = date(2025, 11, 3)  # a Monday
MEANT: Mapping[Kind, tuple[Rule, ...]] = {
    "stop": ("inactivity",),
    "halve": ("frequency_drop", "inactivity"),
    "spend_drop": ("spend_drop",),
    "category_lapse": ("category_lapse",),
}


def facts(event: Mapping[str, Any], new_visit: bool) -> EventFacts:
    amount = int(Decimal(str(event["amount"])) * Money.SCALE)
    return EventFacts(
        str(event["kind"]),
        local_day(event),
        amount,
        str(event["store_id"]),
        frozenset(str(item["category"]) for item in event.get("items") or []),
        new_visit,
        (event.get("attributes") or {}).get("segment"),
        event.get("staff_id"),
    )


def firing(
    states: Sequence[CustomerState], policy: PolicyBody, day: date
) -> dict[str, dict[Rule, rules.Verdict]]:
    """The firing verdicts of every eligible customer, evaluated at 00:00 UTC of `day`."""
    now = datetime.combine(day, datetime.min.time(), UTC)
    scores = score_many(states, PRIOR, day, policy.horizon_days)
    found: dict[str, dict[Rule, rules.Verdict]] = {}
    for state, scored in zip(states, scores, strict=True):
        if not rules.may_defect(state, policy):
            continue
        evaluation = rules.evaluate(state, scored, policy, now, has_open_alerts=False)
        if evaluation.eligible:
            found[state.customer_id] = {
                rule: verdict for rule, verdict in evaluation.verdicts.items() if verdict.firing
            }
    return found


def caught(truth: Truth, verdicts: Mapping[Rule, rules.Verdict], *, meant: bool) -> bool:
    for rule, verdict in verdicts.items():
        if meant and rule not in MEANT[truth.kind]:
            continue
        if rule == "category_lapse" and truth.lapsed_category is not None and meant:
            named = {entry["category"] for entry in verdict.evidence["lapsed"]}
            if truth.lapsed_category not in named:
                continue
        return True
    return False


def service(chain: Chain, policy: PolicyBody) -> dict[str, Any]:
    """The rules at the chain's end, and every Monday for the yearly figure."""
    states: dict[str, CustomerState] = {}
    seen: set[tuple[str, date]] = set()
    by_day: dict[date, list[dict[str, Any]]] = defaultdict(list)
    for event in chain.events:
        by_day[local_day(event)].append(event)
    ever: dict[str, set[Rule]] = defaultdict(set)
    day = chain.spec.start
    while day < chain.spec.end:
        for event in by_day.get(day, []):
            customer = str(event["customer_id"])
            visit = (customer, day)
            new = event["kind"] == "purchase" and visit not in seen
            seen.add(visit)
            state = states.setdefault(customer, CustomerState(customer))
            state.apply([facts(event, new)])
        day += timedelta(days=1)
        if day.weekday() == 0 or day == chain.spec.end:
            for customer, verdicts in firing(list(states.values()), policy, day).items():
                ever[customer] |= set(verdicts)
    at_end = firing(list(states.values()), policy, chain.spec.end)
    return {"states": states, "at_end": at_end, "ever": ever}


def measure(spec: ChainSpec, policy: PolicyBody) -> dict[str, Any]:
    started = time.perf_counter()
    chain = generate(spec)
    ran = service(chain, policy)
    states: dict[str, CustomerState] = ran["states"]
    at_end: dict[str, dict[Rule, rules.Verdict]] = ran["at_end"]
    end = spec.end
    loyal_now = {
        c
        for c, t in chain.truth.items()
        if t.kind == "loyal" and c in states and _loyal(states[c], policy, end)
    }
    result: dict[str, Any] = {"loyal": len(loyal_now)}
    result["service_fa"] = sum(bool(at_end.get(c)) for c in loyal_now) / len(loyal_now)
    result["service_fa_year"] = sum(bool(ran["ever"].get(c)) for c in loyal_now) / len(loyal_now)
    result["service_fa_by_rule"] = {
        rule: sum(rule in at_end.get(c, {}) for c in loyal_now) / len(loyal_now)
        for rule in ("inactivity", "frequency_drop", "spend_drop", "category_lapse")
    }
    for kind in DEFECTIONS:
        members = [t for t in chain.truth.values() if t.kind == kind]
        result[f"service_{kind}"] = sum(
            caught(t, at_end.get(t.customer_id, {}), meant=True) for t in members
        ) / len(members)
        result[f"service_any_{kind}"] = sum(
            caught(t, at_end.get(t.customer_id, {}), meant=False) for t in members
        ) / len(members)
    oracle = limit(chain, loyal_now)
    result["limit_fa"] = oracle.false_alarms
    for kind in DEFECTIONS:
        result[f"limit_{kind}"] = oracle.recall[kind]
    result.update(_p_alive(chain, states, loyal_now))
    result["seconds"] = time.perf_counter() - started
    return result


def _loyal(state: CustomerState, policy: PolicyBody, day: date) -> bool:
    return (
        state.first_visit_on is not None
        and state.visit_days >= policy.loyalty.min_visits
        and (day - state.first_visit_on).days >= policy.loyalty.min_tenure_days
    )


def _p_alive(
    chain: Chain, states: Mapping[str, CustomerState], loyal_now: set[str]
) -> dict[str, float]:
    end = chain.spec.end
    ids = [c for c, s in states.items() if s.first_visit_on is not None]
    x = np.array([states[c].visit_days - 1 for c in ids], dtype=np.float64)
    t_x = np.array(
        [(states[c].last_visit_on - states[c].first_visit_on).days for c in ids],  # type: ignore[operator]
        dtype=np.float64,
    )
    T = np.array([(end - states[c].first_visit_on).days for c in ids], dtype=np.float64)  # type: ignore[operator]
    fit = pareto.fit_pareto_nbd(x, t_x, T, initial=PRIOR)
    alive = dict(zip(ids, pareto.p_alive(fit.params, x, t_x, T), strict=True))
    result = {"btyd_fa": sum(alive[c] < 0.3 for c in loyal_now) / len(loyal_now)}
    for kind in DEFECTIONS:
        members = [t.customer_id for t in chain.truth.values() if t.kind == kind]
        result[f"btyd_{kind}"] = sum(alive.get(c, 1.0) < 0.3 for c in members) / len(members)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--customers", type=int, default=2000, help="default: 2,000")
    parser.add_argument("--seeds", type=int, default=3, help="chains, medians reported")
    parser.add_argument("--policy", help="a policy JSON file (default: the default policy)")
    args = parser.parse_args(argv)
    policy = PolicyBody()
    if args.policy:
        policy = PolicyBody.model_validate_json(Path(args.policy).read_text())
    runs = []
    for seed in range(1, args.seeds + 1):
        spec = ChainSpec(
            customers=args.customers, start=START, days=364, seed=seed, defection_share=0.4
        )
        run = measure(spec, policy)
        runs.append(run)
        print(f"seed {seed}: {run['loyal']} unchanged loyal, {run['seconds']:.0f} s")
    print(_table(runs))


def _table(runs: Sequence[Mapping[str, Any]]) -> str:
    def median(key: str) -> float:
        return statistics.median(float(run[key]) for run in runs)

    lines = [
        f"medians of {len(runs)} chains ({runs[0]['loyal']} unchanged loyal in the first)",
        "",
        "| | service (default policy) | limit | P(alive) < 0.3 | service / limit |",
        "|---|---|---|---|---|",
        f"| false alarms, at one moment | {median('service_fa'):.1%} | "
        f"{median('limit_fa'):.1%} | {median('btyd_fa'):.1%} | |",
        f"| false alarms, within a year (weekly checks) | {median('service_fa_year'):.1%} | | | |",
    ]
    for kind in DEFECTIONS:
        own, bound = median(f"service_{kind}"), median(f"limit_{kind}")
        ratio = f"{own / bound:.2f}" if bound else "-"
        lines.append(
            f"| recall {kind} (any rule: {median(f'service_any_{kind}'):.2f}) | {own:.2f} | "
            f"{bound:.2f} | {median(f'btyd_{kind}'):.2f} | {ratio} |"
        )
    by_rule = ", ".join(
        f"{rule} {statistics.median(run['service_fa_by_rule'][rule] for run in runs):.1%}"
        for rule in runs[0]["service_fa_by_rule"]
    )
    lines += ["", f"service false alarms at one moment by rule: {by_rule}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
