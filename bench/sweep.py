"""Sweeper throughput of Defection Radar: re-evaluating the customers whose next check came.

What is measured
    Wall time of one `app.alerts.service.sweep(...)` call (the same function, evaluator and
    `TransactionRunner` the service runs every RADAR_SWEEP_INTERVAL) over a table of
    1,000,000 stored customers of whom a fraction is due: 0.1% (1,000), 1% (10,000) and 10%
    (100,000). Reported per database: seconds (median and min-max), customers/s, seconds
    per 10,000 due (flat when time is proportional to the due customers, not to the
    table), alerts opened, and the process's memory. Target (the issue): 10,000 due in
    < 2 s, printed as PASS or MISS per database.

How
    The schema comes from the app's own migrations. The customers are written by SQL alone
    (SQLite: a recursive CTE; PostgreSQL: generate_series; both INSERT ... SELECT joined
    with a small temporary table of 251 pattern templates built here): loyal customers with
    5-40 visit days spread over the year before the clock, a `weekly` dict of their visit
    weeks, 2-3 category tallies [count, last day, first day], one or two stores and a home
    store. The templates mix steady customers, customers gone quiet, slowing down, spending
    less and dropping a category, so every rule has work; ids vary the stores, and the
    next checks. Customer `c%08d` with id i is due when i % m == 0 (m = 1 / fraction),
    at CLOCK minus up to a day; every other customer is due 1-31 days after CLOCK.

    Each run: reset the next checks (the previous run's due customers back to the future,
    the new ones due: primary-key UPDATEs of at most 10,000 customers per transaction),
    delete alerts and alert_events, on PostgreSQL
    VACUUM ANALYZE (so no run pays for the previous run's dead rows), then time sweep()
    with the fixed clock and the default batch size from Settings. Right after, a second
    sweep at the same clock must find 0 due: the swept customers' next checks moved past
    the clock. Repetitions interleave the fractions; the table shows medians.

    Memory: peak RSS is `resource.getrusage(...).ru_maxrss`. Where the kernel allows
    (/proc/self/clear_refs), the peak is reset before the population and before each timed
    sweep, so each phase's own peak is shown with its growth over the RSS it started from.
    SQLite's page cache (cache_size=-65536: up to 64 MiB per connection) lives in this
    process; PostgreSQL's memory is the server's and is not counted.

    A last, separate run at 1% due times the steps of each sweep batch (claim query,
    evaluation, storing next checks, writing alerts, commit) with the same functions
    sweep() calls, and scoring alone (score_many, re-run on the same states).

    SQLite: a temporary file, journal_mode=WAL as the service sets it, synchronous=FULL
    (the service's default; --sqlite-synchronous NORMAL to compare). PostgreSQL:
    postgresql://postgres@127.0.0.1:5432/radar_bench_sweep (created if missing) unless
    RADAR_BENCH_POSTGRES_URL or --postgres-url says otherwise; its public schema is wiped
    first (DROP SCHEMA public CASCADE; CREATE SCHEMA public).

Run (about 4 minutes; --quick, 100,000 customers and one repetition, about 30 s)
    .venv/bin/python bench/sweep.py
    .venv/bin/python bench/sweep.py --quick --databases sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop
from _postgres import asyncpg_url, reset_postgres
from sqlalchemy import Connection, event

from app.alerts.service import Evaluator, sweep
from app.customers import repository as customers
from app.customers.repository import sqlite_timestamp
from app.customers.state import WEEKS_KEPT, week_index
from app.kit.db import Money, TransactionRunner, create_engine
from app.kit.migrations import upgrade
from app.kit.settings import Settings
from app.scoring import service as scoring

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/radar_bench_sweep"
DATABASES = ("sqlite", "postgres")
CLOCK = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # the sweep's "now": after all the data
CLOCK_TEXT = sqlite_timestamp(CLOCK)
DEFAULT_FRACTIONS = (0.001, 0.01, 0.1)
TARGET_DUE = 10_000
TARGET_SECONDS = 2.0
TEMPLATES = 251  # prime: every due subset (i % m == 0) sees every template
STORES = 50
SEED = 20261201
MIB = 1024.0

# --- memory -----------------------------------------------------------------------------


def peak_rss_kib() -> int:
    """The process's peak RSS since start or the last reset (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return peak_rss_kib()


class Memory:
    """Peak RSS per phase: the kernel's high-water mark is reset before each phase."""

    def __init__(self) -> None:
        self.start_rss = rss_kib()
        self.lifetime_peak = peak_rss_kib()
        self.resettable = True

    def begin(self) -> int:
        """Reset the peak to the current RSS (if allowed) and return that RSS."""
        self.lifetime_peak = max(self.lifetime_peak, peak_rss_kib())
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.resettable = False
        return rss_kib()

    def peak(self) -> int:
        peak = peak_rss_kib()
        self.lifetime_peak = max(self.lifetime_peak, peak)
        return peak


def mib(kib: float) -> str:
    return f"{kib / MIB:,.0f}"


def growth(kib: float) -> str:
    return f"{round(kib / MIB):+,d}"


# --- the customers ----------------------------------------------------------------------

# Most loyal customers are steady; one in ten of each other kind is drifting in its own way.
KINDS = (*["steady"] * 6, "gone quiet", "slowing", "spending less", "dropped a category")
TEMPLATE_COLUMNS = (
    "k", "first_visit_on", "last_visit_on", "visit_days", "purchases", "refunds",
    "purchase_amount", "refund_amount", "first_visit_amount", "weekly", "categories",
    "home_count", "other_count", "segment", "segment_on",
)  # fmt: skip
PG_TEMPLATE_TYPES = (
    "int", "date", "date", "int", "int", "int", "bigint", "bigint", "bigint", "text", "text",
    "int", "int", "text", "date",
)  # fmt: skip


def make_template(k: int, today: date, rng: random.Random) -> tuple[Any, ...]:
    """One loyal customer's stored pattern, consistent with the visits it was built from."""
    kind = KINDS[k % len(KINDS)]
    visits = rng.randint(5, 40)
    first_ago = rng.randint(150, 364)
    if kind == "gone quiet":
        last_ago = rng.randint(21, min(150, first_ago - visits - 60))
    else:
        last_ago = rng.randint(0, 10)
    first, last = today - timedelta(days=first_ago), today - timedelta(days=last_ago)
    span = (last - first).days
    if kind == "slowing":  # one or two visits in the last two months, the rest before
        recent = rng.randint(1, 2)
        offsets = rng.sample(range(1, span - 60), visits - 2 - recent)
        offsets += rng.sample(range(span - 60, span), recent)
    else:
        offsets = rng.sample(range(1, span), visits - 2)
    days = sorted([first, last, *(first + timedelta(days=d) for d in offsets)])
    base = rng.uniform(15, 80)
    amounts = []
    for day in days:
        amount = base * rng.uniform(0.7, 1.3)
        if kind == "spending less" and (today - day).days <= 56:
            amount *= 0.3
        amounts.append(round(amount, 2) * Money.SCALE)
    cents = [round(a) for a in amounts]
    weekly: dict[str, list[int]] = {}
    for day, amount in zip(days, cents, strict=True):
        bucket = weekly.setdefault(str(week_index(day)), [0, 0])
        bucket[0] += 1
        bucket[1] += amount
    oldest = week_index(last) - (WEEKS_KEPT - 1)
    weekly = {week: tally for week, tally in weekly.items() if int(week) >= oldest}

    def tally(indices: range) -> list[int | str]:
        chosen = [days[i] for i in indices]
        return [len(chosen), max(chosen).isoformat(), min(chosen).isoformat()]

    categories = {"bakery": tally(range(len(days))), "dairy": tally(range(0, len(days), 2))}
    if kind == "dropped a category":
        categories["wine"] = tally(range(max(4, len(days) // 3)))
    elif k % 2:
        categories["produce"] = tally(range(1, len(days), 3))
    purchases = visits + rng.randint(0, visits // 4)
    refunds = 1 if k % 7 == 0 else 0
    other = k % 3
    segment = "regular" if k % 4 == 0 else None
    return (
        k,
        first,
        last,
        visits,
        purchases,
        refunds,
        sum(cents),
        refunds * 5 * Money.SCALE,
        cents[0],
        orjson.dumps(weekly).decode(),
        orjson.dumps(categories).decode(),
        purchases - other,
        other,
        segment,
        last if segment else None,
    )


def make_templates(today: date) -> list[tuple[Any, ...]]:
    rng = random.Random(SEED)
    return [make_template(k, today, rng) for k in range(TEMPLATES)]


_CUSTOMER_COLUMNS = (
    "customer_id, first_visit_on, last_visit_on, visit_days, purchases, refunds, "
    "purchase_amount, refund_amount, first_visit_amount, weekly, categories, stores, "
    "home_store, segment, segment_on, next_check_at, updated_at"
)
# {"s<i % 50>": home purchases[, "s<(i + 7) % 50>": other purchases]}
_STORES = (
    "'{\"s' || (i % 50) || '\": ' || t.home_count || CASE WHEN t.other_count > 0 "
    "THEN ', \"s' || ((i + 7) % 50) || '\": ' || t.other_count ELSE '' END || '}'"
)
_FUTURE_MINUTES = "1440 + i % 43200"  # 1 to 31 days after the clock
_DUE_MINUTES = "-(i % 1440)"  # up to a day before the clock

SQLITE_TEMPLATE_TABLE = f"CREATE TEMP TABLE bench_templates ({', '.join(TEMPLATE_COLUMNS)})"
SQLITE_POPULATE = (
    "WITH RECURSIVE ids(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM ids WHERE i + 1 < ?) "  # noqa: S608
    f"INSERT INTO customers ({_CUSTOMER_COLUMNS}) "
    "SELECT printf('c%08d', i), t.first_visit_on, t.last_visit_on, t.visit_days, "
    "t.purchases, t.refunds, t.purchase_amount, t.refund_amount, t.first_visit_amount, "
    f"t.weekly, t.categories, {_STORES}, 's' || (i % 50), t.segment, t.segment_on, "
    f"strftime('%Y-%m-%d %H:%M:%S', ?, ({_FUTURE_MINUTES}) || ' minutes') || '.000000', ? "
    "FROM ids CROSS JOIN bench_templates AS t WHERE t.k = i % ?"
)
INSERT_TEMPLATE = "INSERT INTO bench_templates VALUES "
PG_TEMPLATE_TABLE = (
    "CREATE TEMP TABLE bench_templates ("
    + ", ".join(f"{n} {t}" for n, t in zip(TEMPLATE_COLUMNS, PG_TEMPLATE_TYPES, strict=True))
    + ") ON COMMIT DROP"
)
PG_POPULATE = (
    f"INSERT INTO customers ({_CUSTOMER_COLUMNS}) "  # noqa: S608 - constants only
    "SELECT 'c' || lpad(i::text, 8, '0'), t.first_visit_on, t.last_visit_on, t.visit_days, "
    "t.purchases, t.refunds, t.purchase_amount, t.refund_amount, t.first_visit_amount, "
    f"t.weekly::json, t.categories::json, ({_STORES})::json, 's' || (i % 50), "
    "t.segment, t.segment_on, "
    f"$2::timestamptz + make_interval(mins => {_FUTURE_MINUTES}), $3::timestamptz "
    "FROM generate_series(0, $1::int - 1) AS g(i) JOIN bench_templates AS t ON t.k = i % $4"
)


def _sqlite_set_next_checks(minutes: str) -> str:
    """Set the next check of customers i = start, start + m, ... < stop
    (params: start, m, m, stop, clock)."""
    return (
        "WITH RECURSIVE ids(i) AS (SELECT ? UNION ALL SELECT i + ? FROM ids WHERE i + ? < ?) "  # noqa: S608
        "UPDATE customers SET next_check_at = "
        f"strftime('%Y-%m-%d %H:%M:%S', ?, ({minutes}) || ' minutes') || '.000000' "
        "FROM ids WHERE customers.customer_id = printf('c%08d', ids.i)"
    )


def _pg_set_next_checks(minutes: str) -> str:
    """The same for PostgreSQL (params: start, stop, m, clock)."""
    return (
        "UPDATE customers SET next_check_at = "  # noqa: S608 - constant expressions only
        f"$4::timestamptz + make_interval(mins => {minutes}) "
        "FROM generate_series($1::int, $2::int - 1, $3::int) AS g(i) "
        "WHERE customers.customer_id = 'c' || lpad(g.i::text, 8, '0')"
    )


SET_NEXT_CHECKS = {
    ("sqlite", "due"): _sqlite_set_next_checks(_DUE_MINUTES),
    ("sqlite", "future"): _sqlite_set_next_checks(_FUTURE_MINUTES),
    ("postgresql", "due"): _pg_set_next_checks(_DUE_MINUTES),
    ("postgresql", "future"): _pg_set_next_checks(_FUTURE_MINUTES),
}


# Customers whose next check a reset transaction changes at most: one UPDATE of 100,000
# scattered rows took SQLite's page cache (and this process) about 400 MiB past its
# cache_size, which would then hide what the sweeps themselves need.
RESET_CHUNK = 10_000


def set_next_checks(
    connection: Connection, *, kind: str, modulus: int, start: int, stop: int
) -> None:
    """Customers i in [start, stop) with i % modulus == 0 (start is a multiple) due at the
    clock (kind "due") or back to their populated next check ("future")."""
    sql = SET_NEXT_CHECKS[(connection.dialect.name, kind)]
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(sql, (start, stop, modulus, CLOCK))
    else:
        clock = CLOCK.strftime("%Y-%m-%d %H:%M:%S")
        connection.exec_driver_sql(sql, (start, modulus, modulus, stop, clock))


def populate(connection: Connection, count: int) -> None:
    """Every customer, with its next check after the clock; SQL only, nothing per row here."""
    templates = make_templates(CLOCK.date())
    updated_at = CLOCK - timedelta(days=1)
    if connection.dialect.name == "postgresql":
        marks = ", ".join(f"${i + 1}" for i in range(len(TEMPLATE_COLUMNS)))
        connection.exec_driver_sql(PG_TEMPLATE_TABLE)
        connection.exec_driver_sql(INSERT_TEMPLATE + f"({marks})", templates)
        connection.exec_driver_sql(PG_POPULATE, (count, CLOCK, updated_at, TEMPLATES))
        return
    rows = [
        tuple(value.isoformat() if isinstance(value, date) else value for value in row)
        for row in templates
    ]
    marks = ", ".join("?" * len(TEMPLATE_COLUMNS))
    connection.exec_driver_sql(SQLITE_TEMPLATE_TABLE)
    connection.exec_driver_sql(INSERT_TEMPLATE + f"({marks})", rows)
    connection.exec_driver_sql(
        SQLITE_POPULATE,
        (count, CLOCK.strftime("%Y-%m-%d %H:%M:%S"), sqlite_timestamp(updated_at), TEMPLATES),
    )
    connection.exec_driver_sql("DROP TABLE bench_templates")


def count_due(connection: Connection) -> int:
    """Customers due at the clock (an index range count)."""
    sql = "SELECT count(*) FROM customers WHERE next_check_at <= "
    if connection.dialect.name == "postgresql":
        return int(connection.exec_driver_sql(sql + "$1", (CLOCK,)).scalar_one())
    return int(connection.exec_driver_sql(sql + "?", (CLOCK_TEXT,)).scalar_one())


async def reset(
    transactions: TransactionRunner, previous: int | None, modulus: int, count: int
) -> int:
    """Back to the populated state with customers i % modulus == 0 due, and no alerts;
    returns how many are due (the previous run's due customers get their first next check
    back). At most RESET_CHUNK customers per transaction."""
    for kind, step in (("future", previous), ("due", modulus)):
        if step is None:
            continue
        for start in range(0, count, step * RESET_CHUNK):
            stop = min(count, start + step * RESET_CHUNK)
            await transactions.run(
                functools.partial(set_next_checks, kind=kind, modulus=step, start=start, stop=stop)
            )
    return await transactions.run(clear_alerts)


def clear_alerts(connection: Connection) -> int:
    """Delete every alert and alert event; returns how many customers are due."""
    connection.exec_driver_sql("DELETE FROM alert_events")
    connection.exec_driver_sql("DELETE FROM alerts")
    return count_due(connection)


def alert_counts(connection: Connection) -> tuple[int, int]:
    sql = "SELECT (SELECT count(*) FROM alerts), (SELECT count(*) FROM alert_events)"
    alerts, events = connection.exec_driver_sql(sql).one()
    return int(alerts), int(events)


def alerts_by_rule(connection: Connection) -> dict[str, int]:
    rows = connection.exec_driver_sql("SELECT rule, count(*) FROM alerts GROUP BY rule")
    return {str(rule): int(n) for rule, n in rows}


def explain_claim(connection: Connection, batch_size: int) -> list[str]:
    """The plan of the exact statement `claim_due` sends (captured as it runs)."""
    captured: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        captured.append((args[2], args[3]))  # conn, cursor, statement, parameters, ...

    event.listen(connection, "before_cursor_execute", capture)
    try:
        customers.claim_due(connection, CLOCK, batch_size)
    finally:
        event.remove(connection, "before_cursor_execute", capture)
    statement, parameters = captured[-1]
    if connection.dialect.name == "postgresql":
        rows = connection.exec_driver_sql("EXPLAIN " + statement, parameters)
        return [str(row[0]) for row in rows]
    rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
    return [str(row[-1]) for row in rows]


# --- PostgreSQL housekeeping ------------------------------------------------------------


async def postgres_value(url: str, sql: str) -> Any:
    connection = await asyncpg.connect(asyncpg_url(url), timeout=5)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


async def postgres_execute(url: str, sql: str) -> None:
    """Outside any transaction block (VACUUM needs that)."""
    connection = await asyncpg.connect(asyncpg_url(url), timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


# --- measuring --------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    fraction: float
    due: int
    seconds: float
    swept: int
    batches: int
    alerts: int
    alert_events: int
    recheck_due: int  # found by a second sweep at the same clock, plus still counted due
    recheck_seconds: float
    rss_before_kib: int
    peak_kib: int

    @property
    def per_s(self) -> float:
        return self.swept / self.seconds if self.seconds else 0.0

    @property
    def per_target(self) -> float:
        """Seconds per 10,000 due customers."""
        return self.seconds / (self.due / TARGET_DUE) if self.due else float("nan")


@dataclass
class DatabaseResult:
    name: str
    title: str
    batch_size: int = 0
    populate_seconds: float = 0.0
    size_mib: float = 0.0
    populate_rss_before_kib: int = 0
    populate_peak_kib: int = 0
    populate_rss_after_kib: int = 0
    rss_after_sweeps_kib: int = 0
    explain: list[str] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    rules: dict[str, int] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None


@dataclass(frozen=True)
class Plan:
    customers: int
    repetitions: int
    fractions: tuple[float, ...]
    synchronous: str
    postgres_url: str
    breakdown: bool


STEPS = ("claim query", "evaluate", "save next checks", "write alerts")
SCORING = "  of which scoring"
HAND_OFF = "commit + hand-off"


async def phase_breakdown(
    transactions: TransactionRunner, evaluator: Evaluator, batch_size: int
) -> dict[str, float]:
    """The steps of `sweep`'s batches, timed one by one (same functions, same order)."""
    totals = dict.fromkeys((*STEPS[:2], SCORING, *STEPS[2:], HAND_OFF), 0.0)
    while True:

        def one_batch(connection: Connection) -> tuple[int, list[float], float]:
            marks = [time.perf_counter()]
            states = customers.claim_due(connection, CLOCK, batch_size)
            marks.append(time.perf_counter())
            changes = evaluator.evaluate(connection, states, CLOCK)
            marks.append(time.perf_counter())
            customers.save_next_checks(connection, states)
            marks.append(time.perf_counter())
            evaluator.write(connection, changes)
            marks.append(time.perf_counter())
            steps = [after - before for before, after in itertools.pairwise(marks)]
            return len(states), steps, time_scoring(connection, states, evaluator)

        started = time.perf_counter()
        done, steps, scoring_seconds = await transactions.run(one_batch)
        outer = time.perf_counter() - started
        for name, seconds in zip(STEPS, steps, strict=True):
            totals[name] += seconds
        totals[SCORING] += scoring_seconds
        totals[HAND_OFF] += outer - sum(steps) - scoring_seconds
        if done < batch_size:
            return totals


def time_scoring(connection: Connection, states: Sequence[Any], evaluator: Evaluator) -> float:
    """score_many again on the claimed states, as `evaluate` calls it."""
    if not states:
        return 0.0
    current, model = evaluator.context(connection)
    policy = current.body
    value = scoring.ValueSettings(policy.value.horizon_days, policy.value.annual_discount_rate)
    started = time.perf_counter()
    scoring.score_many(
        states, model.params, CLOCK.date(), policy.horizon_days, spend=model.spend, value=value
    )
    return time.perf_counter() - started


async def measure(
    result: DatabaseResult,
    settings: Settings,
    plan: Plan,
    memory: Memory,
    vacuum: Callable[[], Awaitable[None]],
) -> None:
    engine = create_engine(settings)
    transactions = TransactionRunner(engine, settings)
    batch_size = result.batch_size = settings.sweep_batch_size
    count = plan.customers
    try:
        await upgrade(engine)
        result.populate_rss_before_kib = memory.begin()
        started = time.perf_counter()
        await transactions.run(lambda connection: populate(connection, count))
        await vacuum()
        result.populate_seconds = time.perf_counter() - started
        result.populate_peak_kib = memory.peak()
        result.populate_rss_after_kib = rss_kib()
        print(
            f"[{result.name}] populated {count:,} customers in {result.populate_seconds:.1f} s "
            f"(SQL only); peak RSS {mib(result.populate_peak_kib)} MiB "
            f"({growth(result.populate_peak_kib - result.populate_rss_before_kib)}), "
            f"RSS after {mib(result.populate_rss_after_kib)} MiB",
            flush=True,
        )
        result.explain = await transactions.run(
            lambda connection: explain_claim(connection, batch_size)
        )
        print_explain(result)
        evaluator = Evaluator()
        previous: int | None = None
        for repetition in range(1, plan.repetitions + 1):
            for fraction in plan.fractions:
                modulus = round(1 / fraction)
                due = await reset(transactions, previous, modulus, count)
                await vacuum()
                previous = modulus
                run = await timed_sweep(transactions, evaluator, batch_size, memory, fraction, due)
                result.runs.append(run)
                print(f"  run {repetition} {format_run(run)}", flush=True)
                if modulus == 100 and not result.rules:
                    result.rules = await transactions.run(alerts_by_rule)
        result.rss_after_sweeps_kib = rss_kib()
        if plan.breakdown:
            await reset(transactions, previous, 100, count)
            await vacuum()
            result.phases = await phase_breakdown(transactions, evaluator, batch_size)
    finally:
        await transactions.close()
        await engine.dispose()


async def timed_sweep(
    transactions: TransactionRunner,
    evaluator: Evaluator,
    batch_size: int,
    memory: Memory,
    fraction: float,
    due: int,
) -> Run:
    rss_before = memory.begin()
    started = time.perf_counter()
    swept = await sweep(transactions, evaluator, lambda: CLOCK, batch_size=batch_size)
    seconds = time.perf_counter() - started
    peak = memory.peak()
    started = time.perf_counter()
    recheck = await sweep(transactions, evaluator, lambda: CLOCK, batch_size=batch_size)
    recheck_seconds = time.perf_counter() - started
    still_due = await transactions.run(count_due)
    alerts, events = await transactions.run(alert_counts)
    return Run(
        fraction=fraction,
        due=due,
        seconds=seconds,
        swept=swept.customers,
        batches=swept.batches,
        alerts=alerts,
        alert_events=events,
        recheck_due=recheck.customers + still_due,
        recheck_seconds=recheck_seconds,
        rss_before_kib=rss_before,
        peak_kib=peak,
    )


def print_explain(result: DatabaseResult) -> None:
    kind = "EXPLAIN" if result.name == "postgres" else "EXPLAIN QUERY PLAN"
    print(f"[{result.name}] {kind} of the claim query (claim_due):")
    for line in result.explain:
        print(f"    {line}")
    print(f"  uses index ix_customers_next_check_at: {uses_index(result)}", flush=True)


def uses_index(result: DatabaseResult) -> str:
    return "yes" if any("ix_customers_next_check_at" in line for line in result.explain) else "NO"


def format_run(run: Run) -> str:
    recheck = f"recheck {run.recheck_due} due ({run.recheck_seconds * 1000:.0f} ms)"
    return (
        f"{run.due:>8,} due  {run.seconds:7.3f} s  {run.per_s:>8,.0f}/s  "
        f"{run.batches:>4} batches  {run.alerts:>7,} alerts  {run.alert_events:>7,} events  "
        f"{recheck}  RSS {mib(run.rss_before_kib)} -> peak {mib(run.peak_kib)} MiB"
    )


def run_database(name: str, plan: Plan, memory: Memory, workdir: Path) -> DatabaseResult:
    sqlite_path: Path | None = None
    if name == "sqlite":
        sqlite_path = workdir / "sweep.db"
        url = f"sqlite:///{sqlite_path}"
        title = f"SQLite {sqlite3.sqlite_version} (WAL, synchronous={plan.synchronous})"
    else:
        url = plan.postgres_url
        title = "PostgreSQL"
    result = DatabaseResult(name, title)
    try:
        if sqlite_path is None:
            asyncio.run(reset_postgres(url))
            version = asyncio.run(postgres_value(url, "SHOW server_version"))
            buffers = asyncio.run(postgres_value(url, "SHOW shared_buffers"))
            result.title = f"PostgreSQL {str(version).split()[0]} (shared_buffers {buffers})"
    except (OSError, ValueError, asyncpg.PostgresError) as exc:
        result.skipped = f"{type(exc).__name__}: {exc}".splitlines()[0]
        print(f"  ! {name} skipped: {result.skipped}", flush=True)
        return result
    print(f"[{name}] {result.title}", flush=True)

    async def vacuum() -> None:
        if sqlite_path is None:
            await postgres_execute(url, "VACUUM ANALYZE customers, alerts, alert_events")

    settings = Settings(database_url=url, sqlite_synchronous=plan.synchronous)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(measure(result, settings, plan, memory, vacuum))
    if sqlite_path is not None:
        files = [sqlite_path, sqlite_path.with_name(sqlite_path.name + "-wal")]
        result.size_mib = sum(f.stat().st_size for f in files if f.exists()) / MIB / MIB
    else:
        size = asyncio.run(postgres_value(url, "SELECT pg_database_size(current_database())"))
        result.size_mib = int(size) / MIB / MIB
    return result


# --- report -----------------------------------------------------------------------------

HEADERS = [
    "database",
    "due",
    "seconds (min-max)",
    "customers/s",
    "s per 10,000 due",
    "alerts",
    "recheck due",
    "RSS before",
    "peak RSS (+delta) MiB",
]


def app_revision() -> str:
    """The commit the measured code comes from (and whether app/ differs from it)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, check=True
        ).stdout.decode()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "app", "migrations"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.strip() + (" + uncommitted changes in app/" if dirty.strip() else "")


def batch_sizes(results: Sequence[DatabaseResult]) -> str:
    return "/".join(sorted({str(r.batch_size) for r in results if r.batch_size})) or "-"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def report_rows(results: Sequence[DatabaseResult], plan: Plan) -> list[list[str]]:
    rows = []
    for result in results:
        if result.skipped is not None:
            rows.append([result.name, "skipped", result.skipped, *[""] * 6])
            continue
        for fraction in plan.fractions:
            runs = [run for run in result.runs if run.fraction == fraction]
            seconds = [run.seconds for run in runs]
            rss = median([run.rss_before_kib for run in runs])
            peak = median([run.peak_kib for run in runs])
            rows.append(
                [
                    result.name,
                    f"{runs[0].due:,} ({fraction:.1%})",
                    f"{median(seconds):.3f} ({min(seconds):.3f}-{max(seconds):.3f})",
                    f"{median([run.per_s for run in runs]):,.0f}",
                    f"{median([run.per_target for run in runs]):.3f}",
                    f"{median([run.alerts for run in runs]):,.0f}",
                    str(max(run.recheck_due for run in runs)),
                    mib(rss),
                    f"{mib(peak)} ({growth(peak - rss)})",
                ]
            )
    return rows


def target_line(result: DatabaseResult) -> str:
    if result.skipped is not None or not result.runs:
        return f"{result.name}: skipped"
    exact = [run for run in result.runs if run.due == TARGET_DUE]
    if exact:
        seconds = median([run.seconds for run in exact])
        how = "measured"
    else:  # --quick or another --customers: the nearest fraction, scaled to 10,000
        nearest = min(result.runs, key=lambda run: abs(run.due - TARGET_DUE)).fraction
        seconds = median([run.per_target for run in result.runs if run.fraction == nearest])
        how = f"scaled from {nearest:.1%} due"
    verdict = "PASS" if seconds < TARGET_SECONDS else "MISS"
    return f"{result.title}: {seconds:.3f} s ({how}) {verdict}"


def print_report(results: Sequence[DatabaseResult], plan: Plan, memory: Memory) -> None:
    rows = report_rows(results, plan)
    widths = [max(len(row[i]) for row in [HEADERS, *rows]) for i in range(len(HEADERS))]
    print()
    print(
        f"Sweep benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {plan.customers:,} customers, clock "
        f"{CLOCK:%Y-%m-%d %H:%M} UTC, sweep batch size {batch_sizes(results)}; "
        f"medians of {plan.repetitions} run(s); app at {app_revision()}"
    )
    for result in results:
        if result.skipped is None:
            print(
                f"  {result.name}: {result.title}; populated in {result.populate_seconds:.1f} s, "
                f"{result.size_mib:,.0f} MiB on disk"
            )
    for row in [HEADERS, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"\ntarget: {TARGET_DUE:,} due in < {TARGET_SECONDS:g} s")
    for result in results:
        print(f"  {target_line(result)}")
    print("\nmemory (RSS of this process, MiB; peak = ru_maxrss)")
    reset_note = "" if memory.resettable else " (peak reset unavailable: lifetime peaks)"
    print(f"  at start: {mib(memory.start_rss)}{reset_note}")
    for result in results:
        if result.skipped is not None or not result.runs:
            continue
        before = result.populate_rss_before_kib
        print(
            f"  {result.name} population: RSS before {mib(before)}, peak "
            f"{mib(result.populate_peak_kib)} ({growth(result.populate_peak_kib - before)}), "
            f"RSS after {mib(result.populate_rss_after_kib)}"
        )
        largest = max(result.runs, key=lambda run: run.peak_kib - run.rss_before_kib)
        print(
            f"  {result.name} sweeps: RSS before the first {mib(result.runs[0].rss_before_kib)}"
            f", after the last {mib(result.rss_after_sweeps_kib)}; largest growth within one "
            f"sweep {growth(largest.peak_kib - largest.rss_before_kib)} ({largest.due:,} due, "
            f"peak {mib(largest.peak_kib)})"
        )
    memory.peak()
    print(
        f"  process peak over the whole run: {mib(memory.lifetime_peak)} "
        "(with the population and the resets between runs)"
    )
    for result in results:
        if result.rules:
            rules = ", ".join(f"{rule} {n:,}" for rule, n in sorted(result.rules.items()))
            print(f"\n{result.name} alerts opened at 1% due, by rule: {rules}")
        if result.phases:
            total = sum(v for k, v in result.phases.items() if not k.startswith(" "))
            print(f"{result.name} where the time goes at 1% due (one run, {total:.3f} s):")
            for name, seconds in result.phases.items():
                print(f"  {name:<22} {seconds:7.3f} s  {seconds / total:6.1%}")


# --- command line -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="default: 1,000,000")
    parser.add_argument(
        "--quick", action="store_true", help="100,000 customers (unless --customers), 1 run"
    )
    parser.add_argument("--repetitions", type=int, default=3, help="default: 3")
    parser.add_argument(
        "--fractions",
        default=",".join(str(f) for f in DEFAULT_FRACTIONS),
        help="due fractions, each 1/m for a whole m (default: 0.001,0.01,0.1)",
    )
    parser.add_argument(
        "--databases", default=",".join(DATABASES), help="comma-separated: sqlite,postgres"
    )
    parser.add_argument(
        "--sqlite-synchronous", choices=("FULL", "NORMAL"), default="FULL", help="default: FULL"
    )
    parser.add_argument(
        "--no-breakdown", action="store_true", help="skip the per-step run at 1%% due"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("RADAR_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="wiped before the run! default: $RADAR_BENCH_POSTGRES_URL or " + DEFAULT_POSTGRES_URL,
    )
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    fractions = tuple(float(f) for f in args.fractions.split(",") if f.strip())
    for fraction in fractions:
        if not 0 < fraction <= 1 or abs(1 / fraction - round(1 / fraction)) > 1e-9:
            raise SystemExit(f"fraction {fraction} is not 1/m for a whole m")
    customers_count = args.customers
    if args.quick and customers_count == parse_args([]).customers:
        customers_count = 100_000
    if not 0 < customers_count < 10**8:
        raise SystemExit("--customers must be between 1 and 99,999,999 (ids are c%08d)")
    return Plan(
        customers=customers_count,
        repetitions=1 if args.quick else args.repetitions,
        fractions=fractions,
        synchronous=args.sqlite_synchronous,
        postgres_url=args.postgres_url,
        breakdown=not args.no_breakdown,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    names = [name.strip() for name in args.databases.split(",") if name.strip()]
    unknown = set(names) - set(DATABASES)
    if unknown or not names:
        raise SystemExit(f"unknown database(s) {sorted(unknown)}; choose from {DATABASES}")
    memory = Memory()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="radar-bench-sweep-"))
    try:
        results = [run_database(name, plan, memory, workdir) for name in names]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_report(results, plan, memory)
    print(f"total runtime {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
