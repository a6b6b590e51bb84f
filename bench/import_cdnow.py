"""How fast `radar import` loads the full CDNOW history (69,659 purchases, 23,570 customers).

Each run imports `bench/data/CDNOW_master.txt.gz` into a fresh database through the same
code as `radar import` (`app.imports.service.import_local`), then imports it again (every row
a duplicate). The baseline, in the same process, is reading and validating the file without
storing it: what the database part adds is the ratio.

    .venv/bin/python bench/import_cdnow.py               # SQLite and PostgreSQL, 3 runs each
    .venv/bin/python bench/import_cdnow.py --backends sqlite --runs 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from _postgres import reset_postgres

from app.imports.reader import ReadOptions, parse_mapping, read
from app.imports.service import ImportSummary, import_local, validate_rows
from app.ingestion.schemas import EventLimits
from app.ingestion.service import plan_store
from app.kit.db import TransactionRunner, create_engine, utcnow
from app.kit.migrations import upgrade
from app.kit.settings import Settings

DATA = Path(__file__).resolve().parent / "data" / "CDNOW_master.txt.gz"
OPTIONS = ReadOptions(
    delimiter="whitespace",
    mapping=parse_mapping("customer_id=customer_id,occurred_at=date,amount=dollar_value"),
    date_format="yyyymmdd",
    default_store="cdnow",
    default_currency="USD",
)
SKEW = timedelta(minutes=5)
LIMITS = EventLimits(currency="USD")  # CDNOW sold in dollars
POSTGRES_URL = os.environ.get(
    "RADAR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/radar_bench"
)


def baseline() -> float:
    """Seconds to read, validate and plan every row, storing nothing."""
    started = time.perf_counter()
    rows = list(read(DATA, OPTIONS))
    for start in range(0, len(rows), 2000):
        plan_store(
            validate_rows(rows[start : start + 2000], LIMITS),
            received_at=utcnow(),
            max_future_skew=SKEW,
        )
    return time.perf_counter() - started


async def one_run(backend: str) -> tuple[ImportSummary, ImportSummary]:
    with tempfile.TemporaryDirectory() as directory:
        if backend == "sqlite":
            url = f"sqlite:///{directory}/radar.db"  # synchronous=FULL, the default
        else:
            await reset_postgres(POSTGRES_URL)
            url = POSTGRES_URL
        settings = Settings(database_url=url)
        engine = create_engine(settings)
        transactions = TransactionRunner(engine, settings)
        try:
            await upgrade(engine)
            first = await import_local(
                transactions, DATA, OPTIONS, max_future_skew=SKEW, limits=LIMITS
            )
            again = await import_local(
                transactions, DATA, OPTIONS, max_future_skew=SKEW, limits=LIMITS
            )
            return first, again
        finally:
            await transactions.close()
            await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = statistics.median(baseline() for _ in range(args.runs))
    print(f"baseline (read + validate, no storing): {base:.2f} s")
    print("| database | import s (median; min-max) | rows/s | x baseline | re-import s | target |")
    print("|---|---:|---:|---:|---:|---|")
    for backend in args.backends.split(","):
        runs = [asyncio.run(one_run(backend)) for _ in range(args.runs)]
        first = [r[0].seconds for r in runs]
        again = statistics.median(r[1].seconds for r in runs)
        summary = runs[-1][0]
        assert summary.rows == 69_659
        assert runs[-1][1].accepted == 0  # the second import stores nothing
        median = statistics.median(first)
        verdict = ("PASS" if median < 5 else "MISS") if backend == "sqlite" else "-"
        print(
            f"| {backend} | {median:.2f} ({min(first):.2f}-{max(first):.2f}) | "
            f"{summary.rows / median:,.0f} | {median / base:.1f}x | {again:.2f} | "
            f"< 5 s on SQLite: {verdict} |"
        )
    print(
        f"rows {summary.rows}: accepted {summary.accepted}, rejected {summary.rejected} "
        "(zero-dollar rows: the API takes amounts > 0)"
    )


if __name__ == "__main__":
    main()
