"""What a default install opens after importing the CDNOW history: the list callers get.

The full CDNOW master file (23,570 customers, January 1997 to June 1998) is imported with
`radar import`'s code into a fresh SQLite database, the population model refitted, and the
sweeper run with the service's clock at 1998-07-01, the day after the data ends (with
today's clock every CDNOW customer has been silent for decades: all are already lost and
none is called). Printed: the alerts open by rule and severity, the ten first calls in the
default order (value at stake), and the same under the policy without its "already lost"
age.

    .venv/bin/python bench/cdnow_calls.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from import_cdnow import DATA, LIMITS, OPTIONS
from sqlalchemy import select, text, update

from app.alerts.service import Evaluator, sweep
from app.imports.service import import_local
from app.kit.db import TransactionRunner, create_engine
from app.kit.migrations import upgrade
from app.kit.settings import Settings
from app.models import Alert, Customer
from app.policy import service as policies
from app.policy.schemas import PolicyBody
from app.scoring.service import refit

NOW = datetime(1998, 7, 1, 9, tzinfo=UTC)


async def calls(policy: PolicyBody) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(database_url=f"sqlite:///{directory}/radar.db")
        engine = create_engine(settings)
        transactions = TransactionRunner(engine, settings)
        try:
            await upgrade(engine)
            summary = await import_local(
                transactions,
                DATA,
                OPTIONS,
                max_future_skew=timedelta(minutes=5),
                limits=LIMITS,
            )
            await transactions.run(
                lambda c: policies.replace(c, policy, source="api", created_by="bench", now=NOW)
            )
            await refit(transactions, NOW.date())
            # The import leaves every customer due at the import's moment; here the service's
            # clock is 1998, so they are made due then.
            await transactions.run(
                lambda c: c.execute(update(Customer).values(next_check_at=NOW - timedelta(1)))
            )
            started = time.perf_counter()
            swept = await sweep(transactions, Evaluator(), lambda: NOW, max_batches=100_000)
            seconds = time.perf_counter() - started
            rows = await transactions.read(
                lambda c: c.execute(
                    select(
                        Alert.customer_id,
                        Alert.rule,
                        Alert.severity,
                        Alert.value_at_risk,
                        Alert.evidence,
                    )
                    .where(Alert.status == "open")
                    .order_by(Alert.value_at_risk.desc(), Alert.customer_id)
                ).all()
            )
            lost = await transactions.read(
                lambda c: c.execute(
                    text("SELECT count(*) FROM customers WHERE last_visit_on < :day"),
                    {"day": (NOW.date() - timedelta(days=366)).isoformat()},
                ).scalar_one()
            )
            return {
                "rows": summary.accepted,
                "customers": swept.customers,
                "seconds": seconds,
                "alerts": rows,
                "lost": lost,
            }
        finally:
            await transactions.close()
            await engine.dispose()


def report(name: str, result: dict[str, Any]) -> None:
    alerts = result["alerts"]
    customers = {row.customer_id for row in alerts}
    print(f"## {name}")
    print(
        f"{result['rows']:,} purchases stored, {result['customers']:,} customers swept in "
        f"{result['seconds']:.0f} s; silent for over a year on {NOW.date()}: {result['lost']:,}"
    )
    print(f"open alerts: {len(alerts):,} for {len(customers):,} customers")
    print(f"  by rule: {dict(Counter(row.rule for row in alerts))}")
    print(f"  by severity: {dict(Counter(row.severity for row in alerts))}")
    print("  the first ten calls:")
    for row in alerts[:10]:
        summary = row.evidence.get("summary", "")
        print(f"    {row.customer_id:>6} {row.rule:15} {row.value_at_risk:>9.2f}  {summary}")
    print()


def main() -> None:
    default = PolicyBody()
    no_age = PolicyBody.model_validate({"loyalty": {"lost_after_days": None}})
    for name, policy in (("default policy", default), ("no already-lost age", no_age)):
        report(name, asyncio.run(calls(policy)))


if __name__ == "__main__":
    main()
