"""The outreach report's intervals over many seeds: do they cover the true effect?

What is measured
    Cases of a month are drawn into contact and control by the service's own draw
    (app/alerts/holdout.py, on random customer ids, rules and severities), at the policy's
    holdout. Each case comes back within the window with probability `base` (control) or
    `base + effect` (contact), and spends a log-normal amount when it does. For each seed
    the report's statistics (app/outreach/stats.py) give the intervals; over the seeds:

    coverage  share of seeds whose 95 % interval holds the true difference: of the return
              rate (Newcombe's hybrid score interval) and of the mean net spend (Welch);
              with no effect, this is 1 - the share of seeds that would claim an effect
    power     share of seeds whose interval excludes 0 (effect > 0: the effect is seen)
    limit     the Wald interval (p1 - p0 +- 1.96 SE) on the same draws, the textbook
              interval the Newcombe one replaces: its coverage falls below 95 % with a
              small control group, which is the case a holdout of 0.1 makes

Run (a few seconds)
    .venv/bin/python bench/outreach.py
    .venv/bin/python bench/outreach.py --seeds 2000 --cases 300 --holdout 0.1
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

from app.alerts import holdout as draw
from app.outreach import stats

RULES = ("inactivity", "frequency_drop", "spend_drop", "category_lapse")
SEVERITIES = ("low", "medium", "high")


def run(seeds: int, cases: int, share: float, base: float, effect: float) -> dict[str, float]:
    rate_in = spend_in = wald_in = seen = spend_seen = 0
    widths = []
    mean_spend = math.exp(3.5 + 0.8**2 / 2)  # log-normal(3.5, 0.8): about 45
    for seed in range(seeds):
        rng = random.Random(seed)
        backs: dict[str, list[int]] = {"contact": [], "control": []}
        spends: dict[str, list[float]] = {"contact": [], "control": []}
        for n in range(cases):
            customer = f"s{seed}-c{n}-{rng.getrandbits(32):08x}"
            arm = draw.arm_for(customer, rng.choice(RULES), rng.choice(SEVERITIES), share)
            assert arm is not None
            back = rng.random() < base + (effect if arm == "contact" else 0.0)
            backs[arm].append(back)
            spends[arm].append(rng.lognormvariate(3.5, 0.8) if back else 0.0)
        k1, n1 = sum(backs["contact"]), len(backs["contact"])
        k0, n0 = sum(backs["control"]), len(backs["control"])
        rate = stats.rate_difference(k1, n1, k0, n0)
        spend = stats.mean_difference(spends["contact"], spends["control"])
        if rate is None or spend is None:
            continue
        rate_in += rate.low <= effect <= rate.high
        seen += rate.low > 0 or rate.high < 0
        widths.append(rate.high - rate.low)
        spend_in += spend.low <= effect * mean_spend <= spend.high
        spend_seen += spend.low > 0 or spend.high < 0
        p1, p0 = k1 / n1, k0 / n0
        half = 1.96 * math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
        wald_in += p1 - p0 - half <= effect <= p1 - p0 + half
    return {
        "rate coverage": rate_in / seeds,
        "Wald coverage": wald_in / seeds,
        "spend coverage": spend_in / seeds,
        "rate power": seen / seeds,
        "spend power": spend_seen / seeds,
        "median width": statistics.median(widths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--cases", type=int, default=300, help="cases per seed (a month)")
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument("--base", type=float, default=0.3, help="control return rate")
    args = parser.parse_args()
    print(
        f"{args.seeds} seeds x {args.cases} cases, holdout {args.holdout}, control return rate "
        f"{args.base}; 95 % intervals"
    )
    header = ("effect", "rate coverage", "Wald coverage", "spend coverage", "rate power",
              "spend power", "median width")  # fmt: skip
    print(" | ".join(header))
    for effect in (0.0, 0.05, 0.10, 0.20):
        started = time.perf_counter()
        found = run(args.seeds, args.cases, args.holdout, args.base, effect)
        cells = [f"{effect:.2f}"] + [f"{found[name]:.3f}" for name in header[1:]]
        print(" | ".join(cells), f"  ({time.perf_counter() - started:.1f} s)")
    needed = stats.cases_needed(args.base, 0.05, args.holdout)
    print(f"cases needed to see +5 points at this holdout (80 % power): {needed}")


if __name__ == "__main__":
    main()
