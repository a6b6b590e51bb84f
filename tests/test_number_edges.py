"""Amounts at and past every edge, through the real API on both databases: never a 5xx, a
refusal names the event's field, and what is accepted is summed exactly. (The schema
fuzzer draws few such values; these are aimed at the bounds. Totals past the columns'
range are test_isolation.py's.)"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Keys, event

pytestmark = pytest.mark.anyio

LARGEST = Decimal("999999999999.9999")  # what an amount may be at most (16 digits, 4 places)

edges = st.one_of(
    st.decimals(min_value=0, max_value=LARGEST, places=4),
    st.sampled_from(
        [
            "0",
            "0.0000",
            "0.0001",
            "-0",
            "-0.0001",
            str(LARGEST),
            "1000000000000",
            "999999999999.99999",
            "1e12",
            "1E-4",
            "12.50000",
            "NaN",
            "-Infinity",
            "1e400",
            "",
            " 1",
            "0x10",
            "١٢",
            2**63,
            2**64,
            -(2**63),
            1e308,
            0.1,
            1e-7,
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),  # (JSON has no NaN: strings above)
)
kinds = st.sampled_from(["purchase", "refund"])


def as_json(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cases=st.lists(st.tuples(edges, kinds), min_size=1, max_size=20))
async def test_amount_edges_never_break_a_batch_and_sum_without_overflow(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, cases: list[tuple[Any, str]]
) -> None:
    customer = f"c-{uuid.uuid4().hex}"  # each example its own customer and events
    purchase = event(f"{customer}-p", customer_id=customer, amount=str(LARGEST))
    events = [purchase] + [
        event(
            f"{customer}-{n}",
            customer_id=customer,
            amount=as_json(amount),
            kind=kind,
            occurred_at=f"2026-01-{1 + n:02}T10:00:00Z",
        )
        for n, (amount, kind) in enumerate(cases)
    ]
    response = await client.post(
        "/v1/purchases/batch", json={"events": events}, headers=keys.ingest
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    for result in results:
        for error in result.get("errors", []):
            assert error["pointer"].startswith(f"/events/{result['index']}/"), error
    view = await client.get(f"/v1/customers/{customer}", headers=keys.read)
    assert view.status_code == 200, view.text
    pattern = view.json()["pattern"]
    accepted = [e for e, r in zip(events, results, strict=True) if r["status"] == "accepted"]
    bought = sum(Decimal(str(e["amount"])) for e in accepted if e["kind"] == "purchase")
    refunded = sum(Decimal(str(e["amount"])) for e in accepted if e["kind"] == "refund")
    ceiling = Decimal(2**63 - 1) / 10_000
    assert Decimal(pattern["purchase_amount"]) == min(bought, ceiling)
    assert Decimal(pattern["refund_amount"]) == min(refunded, ceiling)
