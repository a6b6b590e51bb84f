"""Cost of an event through the streaming scorer, against plain ingest, in one process.

What is measured
    Events/s of the database half of ingestion and scoring (the writer's insert, then the
    scorer's micro-batch, here one after the other in one transaction), in three modes on
    the same events:

    store     the events are inserted, deduplicated and queued for the scorer, nothing else:
              what the request path does
    patterns  + the scorer folds each customer's pattern (no scoring)
    scoring   + every touched customer scored (Pareto/NBD, Gamma-Gamma value), the policy's
              rules applied, alerts opened/updated/resolved and next checks stored: the
              service's path

    and the ratios patterns/store and scoring/store (time per event).

How
    A synthetic chain: --customers customers (default 5,000) with personal weekly rhythms
    over a year, some of whom slow down or stop, giving ~100,000 purchases in time order.
    They are parsed and planned once (validation and hashing are the same in every mode and
    are not timed), then applied in batches of --batch events (default 500, one transaction
    each) to a fresh database per mode: SQLite (a temp file, synchronous=FULL, the default)
    and PostgreSQL (postgresql://postgres@127.0.0.1:5432/radar_bench_scoring, created if
    missing and wiped; RADAR_BENCH_POSTGRES_URL overrides). The evaluation clock is
    the moment just after each batch's last purchase, so alerts open and resolve on events
    as they would live (the sweeper, for customers who send nothing, is bench/sweep.py).
    Modes interleave over --repeat rounds (default 3) and the medians are reported.

Run (about 2 minutes)
    .venv/bin/python bench/scoring.py
    .venv/bin/python bench/scoring.py --customers 1000 --repeat 1 --databases sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
from _postgres import reset_postgres
from sqlalchemy import Connection

from app import pipeline
from app.alerts.service import Evaluator
from app.ingestion import repository, service
from app.kit.db import TransactionRunner, create_engine
from app.kit.migrations import upgrade
from app.kit.settings import Settings

MODES = ("store", "patterns", "scoring")
POSTGRES_URL = os.environ.get(
    "RADAR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/radar_bench_scoring"
)
FIRST_DAY = date(2025, 1, 6)
DAYS = 364


def synthetic_events(customers: int, seed: int = 11) -> list[dict[str, object]]:
    """A year of purchases: each customer visits every `gap` days on average; a fifth of
    them halve their visits and a tenth stop, somewhere in the second half of the year."""
    rng = random.Random(seed)
    events: list[dict[str, object]] = []
    for n in range(customers):
        gap = rng.choice([3, 7, 7, 10, 14, 21, 30])
        fate = rng.random()
        change = FIRST_DAY + timedelta(days=rng.randint(DAYS // 2, DAYS - 30))
        day = FIRST_DAY + timedelta(days=rng.randint(0, gap))
        spend = rng.uniform(10, 80)
        while day < FIRST_DAY + timedelta(days=DAYS):
            if day >= change and fate < 0.1:
                break
            slowed = day >= change and fate < 0.3
            events.append(
                {
                    "event_id": f"s-{n}-{day.isoformat()}",
                    "customer_id": f"card-{n:06}",
                    "store_id": f"store-{n % 7}",
                    "occurred_at": f"{day.isoformat()}T{10 + n % 9:02}:15:00+01:00",
                    "amount": f"{spend * rng.uniform(0.6, 1.4):.2f}",
                    "currency": "EUR",
                    "items": [
                        {"category": rng.choice(["grocery", "bakery", "wine"]), "amount": "5"}
                    ],
                }
            )
            step = max(1, round(rng.expovariate(1 / gap)))
            day += timedelta(days=step * (2 if slowed else 1))
    events.sort(key=lambda e: str(e["occurred_at"]))
    return events


def plans(events: list[dict[str, object]], batch: int) -> list[tuple[service.StorePlan, datetime]]:
    """Each batch planned, with the moment it is evaluated at: just after its last event,
    as if the purchases were streaming in live."""
    received = datetime(2026, 1, 10, tzinfo=UTC)
    result = []
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        candidates = service.parse_batch(orjson.dumps({"events": chunk}), batch)
        plan = service.plan_store(candidates, received_at=received, max_future_skew=timedelta(0))
        latest = max(datetime.fromisoformat(str(e["occurred_at"])) for e in chunk)
        result.append((plan, latest.astimezone(UTC) + timedelta(minutes=1)))
    return result


def work(
    mode: str, plan: service.StorePlan, evaluator: Evaluator, now: datetime
) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        if mode == "store":
            repository.insert_new_events(connection, plan.rows)
        elif mode == "patterns":
            service.apply_plan(connection, plan)
            pipeline.score_all(connection, evaluator=None, now=now)
        else:
            service.apply_plan(connection, plan)
            pipeline.score_all(connection, evaluator=evaluator, now=now)

    return run


async def one_run(
    database: str, mode: str, batches: list[tuple[service.StorePlan, datetime]]
) -> float:
    """Seconds to apply every batch in `mode` to a fresh database."""
    with tempfile.TemporaryDirectory() as directory:
        if database == "sqlite":
            url = f"sqlite:///{Path(directory) / 'scoring.db'}"
        else:
            await reset_postgres(POSTGRES_URL)
            url = POSTGRES_URL
        settings = Settings(database_url=url, log_level="WARNING")
        engine = create_engine(settings)
        await upgrade(engine)
        transactions = TransactionRunner(engine, settings)
        evaluator = Evaluator()
        try:
            started = time.perf_counter()
            for plan, now in batches:
                await transactions.run(work(mode, plan, evaluator, now))
            return time.perf_counter() - started
        finally:
            await transactions.close()
            await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgres")
    args = parser.parse_args()

    events = synthetic_events(args.customers)
    batches = plans(events, args.batch)
    print(f"{len(events):,} events of {args.customers:,} customers, batches of {args.batch}")
    for database in args.databases.split(","):
        seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.repeat):
            for mode in MODES:
                seconds[mode].append(asyncio.run(one_run(database, mode, batches)))
        median = {mode: statistics.median(values) for mode, values in seconds.items()}
        print(f"\n{database}: median of {args.repeat} (min-max events/s)")
        for mode in MODES:
            rates = [len(events) / s for s in seconds[mode]]
            print(
                f"  {mode:9s} {len(events) / median[mode]:9,.0f} events/s "
                f"({min(rates):,.0f}-{max(rates):,.0f})  "
                f"{median[mode] / len(events) * 1e6:6.1f} us/event  "
                f"x{median[mode] / median['store']:.2f} the time of store"
            )


if __name__ == "__main__":
    main()
