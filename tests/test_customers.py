"""Customer patterns: what one event changes, and that a rebuild gives the live state."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi import FastAPI

from app.customers.service import rebuild
from app.customers.state import WEEKS_KEPT, CustomerState, EventFacts, week_index
from tests.conftest import Keys, event, stored_customers


def facts(
    day: date,
    *,
    kind: str = "purchase",
    amount: int = 10_000,
    store: str = "s1",
    categories: frozenset[str] = frozenset(),
    new_visit: bool = True,
) -> EventFacts:
    return EventFacts(kind, day, amount, store, categories, new_visit)


def test_purchases_on_one_day_are_one_visit_and_refunds_no_visit() -> None:
    day = date(2026, 3, 2)
    state = CustomerState("c").apply(
        [
            facts(day, amount=50_000),
            facts(day, amount=20_000, new_visit=False),
            facts(date(2026, 3, 9), kind="refund", amount=5_000, new_visit=False),
        ]
    )
    assert (state.visit_days, state.purchases, state.refunds) == (1, 2, 1)
    assert (state.purchase_amount, state.refund_amount) == (70_000, 5_000)
    assert state.weekly == {
        str(week_index(day)): [1, 70_000],
        str(week_index(day) + 1): [0, -5_000],
    }
    assert (state.first_visit_on, state.last_visit_on) == (day, day)


def test_categories_stores_and_the_home_store() -> None:
    state = CustomerState("c").apply(
        [
            facts(date(2026, 1, 5), store="north", categories=frozenset({"bakery", "fuel"})),
            facts(date(2026, 1, 12), store="south", categories=frozenset({"bakery"})),
            facts(date(2026, 1, 19), store="south"),
        ]
    )
    assert state.categories == {
        "bakery": [2, "2026-01-12", "2026-01-05"],
        "fuel": [1, "2026-01-05", "2026-01-05"],
    }
    assert state.stores == {"north": 1, "south": 2}
    assert state.home_store == "south"


def test_weeks_older_than_a_year_before_the_last_visit_are_dropped() -> None:
    first, last = date(2024, 1, 1), date(2026, 1, 5)
    state = CustomerState("c").apply([facts(first), facts(last)])
    assert list(state.weekly) == [str(week_index(last))]
    edge = date.fromordinal(last.toordinal() - 7 * (WEEKS_KEPT - 1))
    state = CustomerState("c").apply([facts(edge), facts(last)])
    assert set(state.weekly) == {str(week_index(edge)), str(week_index(last))}


def test_late_event_updates_past_buckets_as_if_it_came_first() -> None:
    early, late = facts(date(2026, 1, 5)), facts(date(2026, 2, 2))
    in_order = CustomerState("c").apply([early]).apply([late])
    late_first = CustomerState("c").apply([late]).apply([early])
    assert in_order == late_first


@pytest.mark.anyio
async def test_ingest_keeps_patterns_and_rebuild_gives_the_same(
    client: httpx.AsyncClient, keys: Keys, app: FastAPI
) -> None:
    events = [
        event(
            "e-1",
            occurred_at="2026-01-05T23:30:00-05:00",
            amount="10",
            items=[{"category": "dinner", "amount": "10"}],
        ),
        event("e-2", occurred_at="2026-01-05T18:00:00-05:00", amount="4"),
        event("e-3", occurred_at="2026-01-12T12:00:00Z", amount="7.5", store_id="store-2"),
        event("e-4", occurred_at="2026-01-13T12:00:00Z", amount="2", kind="refund"),
        event("e-5", customer_id="card-2", occurred_at="2026-01-07T12:00:00Z"),
    ]
    response = await client.post(
        "/v1/purchases/batch", json={"events": events}, headers=keys.ingest
    )
    assert response.json()["accepted"] == 5
    live = await stored_customers(app)
    card_1 = live[0]
    assert card_1["customer_id"] == "card-1"
    # e-1 and e-2 fall on two UTC days (Jan 6 04:30, Jan 5 23:00) but on one New York day.
    assert (card_1["visit_days"], card_1["purchases"], card_1["refunds"]) == (2, 3, 1)
    assert card_1["first_visit_on"] == date(2026, 1, 5)
    assert card_1["categories"] == {"dinner": [1, "2026-01-05", "2026-01-05"]}
    assert card_1["first_visit_amount"] == Decimal("14")  # e-1 and e-2: one New York day
    assert live[-1]["visit_days"] == [
        ("card-1", date(2026, 1, 5)),
        ("card-1", date(2026, 1, 12)),
        ("card-2", date(2026, 1, 7)),
    ]

    assert await app.state.transactions.run(rebuild) == 2
    assert await stored_customers(app) == live


# Valid customer ids (the client's) that mean something in a URL, and how a path holds each.
URL_LIKE_IDS = {
    "a/b": "a%2Fb",
    "x/../../keys": "x%2F..%2F..%2Fkeys",
    "..": "%2E%2E",
    ".": "%2E",
    "a?b=c": "a%3Fb%3Dc",
    "a#b": "a%23b",
    "100%": "100%25",
    "a b": "a%20b",
    "%2F": "%252F",
}


@pytest.mark.anyio
async def test_a_customer_whose_id_looks_like_url_syntax_is_found_by_its_encoded_id(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    ids = [*URL_LIKE_IDS, "a", "b", "keys"]  # and the ids a mis-split path would name instead
    events = [event(f"e-{n}", customer_id=customer_id) for n, customer_id in enumerate(ids)]
    accepted = await client.post(
        "/v1/purchases/batch", json={"events": events}, headers=keys.ingest
    )
    assert accepted.json()["accepted"] == len(ids), accepted.text
    for customer_id, encoded in URL_LIKE_IDS.items():
        response = await client.get(
            f"/v1/customers/{encoded}", params={"as_of": "2026-02-01"}, headers=keys.read
        )
        assert response.status_code == 200, (customer_id, response.text)
        assert response.json()["customer_id"] == customer_id
    assert (await client.get("/v1/customers/", headers=keys.read)).status_code == 404  # no id


@pytest.mark.anyio
async def test_the_customer_route_is_counted_under_its_template(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    await client.get("/v1/customers/a%2Fb", headers=keys.read)
    text = (await client.get("/metrics")).text
    assert 'radar_http_requests_total{method="GET",route="/v1/customers/{customer_id}"' in text


def _radar(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Result:
    from app.cli import main
    from app.kit.settings import get_settings

    monkeypatch.setenv("RADAR_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(main, args)
    finally:
        get_settings.cache_clear()


def test_radar_rebuild_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _radar(["rebuild"], tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "rebuilt the patterns of 0 customers" in result.output


def test_radar_refit_command_without_customers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _radar(["refit"], tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "not enough customers to fit" in result.output
