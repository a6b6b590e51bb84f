"""/v1/reports on a small chain whose numbers are worked out by hand below."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.kit.auth import Scope
from app.kit.settings import Settings
from app.main import create_app
from tests.conftest import Clock, Keys, ScoredTransport, _truncate, make_key
from tests.test_alerts import post, visits, weekly

pytestmark = pytest.mark.anyio


async def chain(client: httpx.AsyncClient, keys: Keys, clock: Clock) -> dict[str, dict[str, Any]]:
    """A, B (north) and C (south) visit every Monday from 2026-01-05 to 2026-03-23, then
    stop (A served by sam, B and C by lee); D (south) came three times only, so never counts
    as loyal. On 2026-05-01 09:00 the three lapsed customers' alerts open (loyal since
    2026-03-06: 4 visits, 60 days)."""
    clock.set("2026-05-01T09:00:00+00:00")
    for name, store, staff, weeks in (
        ("A", "north", "sam", 12),
        ("B", "north", "lee", 12),
        ("C", "south", "lee", 12),
        ("D", "south", "sam", 3),
    ):
        events = visits(name, weekly(date(2026, 1, 5), weeks), amount="30")
        for item in events:
            item["store_id"], item["staff_id"] = store, staff
        await post(client, keys, events)
    listed = (await client.get("/v1/alerts", headers=keys.read)).json()["items"]
    return {alert["customer_id"]: alert for alert in listed}


async def work(client: httpx.AsyncClient, keys: Keys, clock: Clock, alerts: dict[str, Any]) -> None:
    """A: acknowledged after 2 h, won back after 24 h (price). B: acknowledged after 4 h,
    lost after 48 h (competitor_offer). C: closed after 1 h as not a defection, no reason."""

    async def act(when: str, customer: str, action: str, body: dict[str, Any]) -> None:
        clock.set(when)
        url = f"/v1/alerts/{alerts[customer]['id']}/{action}"
        response = await client.post(url, json=body, headers=keys.read)
        assert response.status_code == 200, response.text

    await act("2026-05-01T10:00:00+00:00", "C", "resolve", {"outcome": "not_a_defection"})
    await act("2026-05-01T11:00:00+00:00", "A", "acknowledge", {})
    await act("2026-05-01T13:00:00+00:00", "B", "acknowledge", {})
    await act(
        "2026-05-02T09:00:00+00:00", "A", "resolve", {"outcome": "won_back", "reason": "price"}
    )
    await act(
        "2026-05-03T09:00:00+00:00",
        "B",
        "resolve",
        {"outcome": "lost", "reason": "competitor_offer"},
    )


async def test_defection_rate_per_month_and_store(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await work(client, keys, clock, await chain(client, keys, clock))
    params = {"from": "2026-03-01", "to": "2026-06-01", "period": "month"}
    body = (await client.get("/v1/reports/defection-rate", params=params, headers=keys.read)).json()
    rows = [
        (r["period_start"], r["loyal_at_start"], r["defected"], r["won_back"], r["net"], r["rate"])
        for r in body["rows"]
    ]
    assert rows == [
        ("2026-03-01", 0, 0, 0, 0, None),  # tenure reached only on 03-06
        ("2026-04-01", 3, 0, 0, 0, 0.0),
        ("2026-05-01", 3, 3, 1, 2, 1.0),
    ]
    by_store = (
        await client.get(
            "/v1/reports/defection-rate", params={**params, "by": "store"}, headers=keys.read
        )
    ).json()
    may = [
        (r["store_id"], r["loyal_at_start"], r["defected"], r["won_back"], r["net"])
        for r in by_store["rows"]
        if r["period_start"] == "2026-05-01"
    ]
    assert may == [("north", 2, 2, 1, 1), ("south", 1, 1, 0, 1)]
    by_staff = (
        await client.get(
            "/v1/reports/defection-rate", params={**params, "by": "staff"}, headers=keys.read
        )
    ).json()
    may = [
        (r["staff_id"], r["loyal_at_start"], r["defected"], r["won_back"], r["net"])
        for r in by_staff["rows"]
        if r["period_start"] == "2026-05-01"
    ]
    assert may == [("lee", 2, 2, 0, 2), ("sam", 1, 1, 1, 0)]  # B and C served by lee, A by sam

    weekly_rows = (
        await client.get(
            "/v1/reports/defection-rate",
            params={"from": "2026-04-27", "to": "2026-05-04", "period": "week"},
            headers=keys.read,
        )
    ).json()["rows"]
    assert [(r["period_start"], r["defected"], r["won_back"]) for r in weekly_rows] == [
        ("2026-04-27", 3, 1)
    ]


async def test_customers_gone_before_the_history_was_loaded_are_counted_not_called(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """E came every Monday from 2025-01-06 to 2025-03-24 and never again: loaded on
    2026-05-01, more than the policy's 365 days later, E opens no alert and counts as
    lost on 2026-03-25, the day the silence passed the age."""
    clock.set("2026-05-01T09:00:00+00:00")
    await post(client, keys, visits("E", weekly(date(2025, 1, 6), 12)))
    assert (await client.get("/v1/alerts", headers=keys.read)).json()["items"] == []
    view = (await client.get("/v1/customers/E", headers=keys.read)).json()
    assert view["next_check_at"] is None  # only a visit can change anything now
    params = {"from": "2026-02-01", "to": "2026-04-01", "period": "month"}
    body = (await client.get("/v1/reports/defection-rate", params=params, headers=keys.read)).json()
    rows = [
        (r["period_start"], r["loyal_at_start"], r["defected"], r["lost_uncalled"], r["rate"])
        for r in body["rows"]
    ]
    assert rows == [("2026-02-01", 1, 0, 0, 0.0), ("2026-03-01", 1, 1, 1, 1.0)]


async def test_reasons_and_response_times(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await chain(client, keys, clock)
    await work(client, keys, clock, alerts)
    span = {"from": "2026-05-01", "to": "2026-06-01"}
    reasons = (await client.get("/v1/reports/reasons", params=span, headers=keys.read)).json()[
        "rows"
    ]
    assert [
        (
            r["reason"],
            r["store_id"],
            r["outcome"],
            r["alerts"],
            r["customers"],
            Decimal(r["value_lost"]),
        )
        for r in reasons
    ] == [
        ("competitor_offer", "north", "lost", 1, 1, Decimal(alerts["B"]["value_at_risk"])),
        ("price", "north", "won_back", 1, 1, Decimal(0)),
    ]
    south = (
        await client.get(
            "/v1/reports/reasons", params={**span, "store_id": "south"}, headers=keys.read
        )
    ).json()
    assert south["rows"] == []  # C was closed without a reason

    times = (await client.get("/v1/reports/response-times", params=span, headers=keys.read)).json()[
        "rows"
    ]
    assert times == [
        {
            "store_id": "north",
            "alerts": 2,
            "acknowledged": 2,
            "resolved_by_people": 2,
            "median_hours_to_acknowledge": 3.0,  # 2 h and 4 h
            "p90_hours_to_acknowledge": 3.8,  # 2 + 0.9 x (4 - 2)
            "median_hours_to_resolve": 36.0,  # 24 h and 48 h
            "p90_hours_to_resolve": 45.6,  # 24 + 0.9 x (48 - 24)
        },
        {
            "store_id": "south",
            "alerts": 1,
            "acknowledged": 0,
            "resolved_by_people": 1,
            "median_hours_to_acknowledge": None,
            "p90_hours_to_acknowledge": None,
            "median_hours_to_resolve": 1.0,
            "p90_hours_to_resolve": 1.0,
        },
    ]


async def test_value_at_risk_of_open_alerts_and_csv(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await chain(client, keys, clock)
    expected: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for alert in alerts.values():
        count, total = expected.get((alert["store_id"], alert["severity"]), (0, Decimal(0)))
        expected[(alert["store_id"], alert["severity"])] = (
            count + 1,
            total + Decimal(alert["value_at_risk"]),
        )
    rows = (await client.get("/v1/reports/value-at-risk", headers=keys.read)).json()["rows"]
    assert {
        (r["store_id"], r["severity"]): (r["alerts"], Decimal(r["value_at_risk"])) for r in rows
    } == expected
    assert sum(r["alerts"] for r in rows) == 3

    csv = await client.get("/v1/reports/value-at-risk", headers={**keys.read, "Accept": "text/csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0] == "store_id,severity,alerts,value_at_risk"
    assert len(lines) == 1 + len(rows)

    params = {"from": "2026-03-01", "to": "2026-06-01"}
    rate_csv = await client.get(
        "/v1/reports/defection-rate", params=params, headers={**keys.read, "Accept": "text/csv"}
    )
    assert rate_csv.text.splitlines() == [
        "period_start,period_end,store_id,staff_id,loyal_at_start,defected,lost_uncalled,"
        "won_back,net,rate",
        "2026-03-01,2026-04-01,,,0,0,0,0,0,",
        "2026-04-01,2026-05-01,,,3,0,0,0,0,0.0",
        "2026-05-01,2026-06-01,,,3,3,0,0,3,1.0",
    ]


@pytest.mark.parametrize(
    ("path", "params", "pointer"),
    [
        ("/v1/reports/defection-rate", {"from": "2026-05-01", "to": "2026-05-01"}, "/query/from"),
        ("/v1/reports/defection-rate", {"from": "2020-01-01", "to": "2026-01-01"}, "/query/from"),
        ("/v1/reports/defection-rate", {"period": "year"}, "/query/period"),
        ("/v1/reports/defection-rate", {"by": "region"}, "/query/by"),
        ("/v1/reports/reasons", {"from": "May"}, "/query/from"),
        ("/v1/reports/response-times", {"to": "2026-13-01"}, "/query/to"),
    ],
)
async def test_bad_report_parameters_are_refused_naming_them(
    client: httpx.AsyncClient, keys: Keys, path: str, params: dict[str, str], pointer: str
) -> None:
    response = await client.get(path, params=params, headers=keys.read)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert pointer in {error["pointer"] for error in response.json()["errors"]}


# Text a spreadsheet would run as a formula: ids a till may send, reasons an operator may set.
FORMULA_IDS = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)"]
FORMULA_REASONS = ["\tprice", "\r=SUM(A1)", "-2", "@SUM(A1)"]


async def csv_report(
    client: httpx.AsyncClient, key: dict[str, str], path: str, **params: str
) -> list[dict[str, str]]:
    headers = {**key, "Accept": "text/csv"}
    response = await client.get(f"/v1/reports/{path}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text, newline="")))


def a_number(cell: str) -> bool:
    try:
        Decimal(cell)
    except InvalidOperation:
        return False
    return True


async def lapse_at_formula_stores(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> list[dict[str, Any]]:
    """One weekly customer per id (card-0...), served at the store and by the staff member of
    that name: their alerts open on 2026-05-01."""
    clock.set("2026-05-01T09:00:00+00:00")
    for n, name in enumerate(FORMULA_IDS):
        events = visits(f"card-{n}", weekly(date(2026, 1, 5), 12), amount="30")
        for item in events:
            item["store_id"], item["staff_id"] = name, name
        await post(client, keys, events)
    opened = (await client.get("/v1/alerts", headers=keys.read)).json()["items"]
    assert len(opened) == len(FORMULA_IDS)
    return sorted(opened, key=lambda alert: str(alert["customer_id"]))


async def test_csv_text_that_could_run_as_a_formula_is_quoted_and_numbers_stay_numbers(
    settings: Settings, clock: Clock
) -> None:
    app = create_app(settings.model_copy(update={"alert_reasons": FORMULA_REASONS}), clock=clock)
    async with LifespanManager(app):
        await _truncate(app)
        key = {"Authorization": f"Bearer {await make_key(app, 'ops', Scope.INGEST, Scope.READ)}"}
        transport = ScoredTransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as client:
            # Two lost in May (FORMULA_REASONS 2, 3), two won back in June: June's net is -2.
            opened = await lapse_at_formula_stores(client, Keys(key, key, key, {}), clock)
            for n, alert in enumerate(opened):
                clock.set("2026-05-02T09:00:00+00:00" if n >= 2 else "2026-06-02T09:00:00+00:00")
                body = {"outcome": "lost" if n >= 2 else "won_back", "reason": FORMULA_REASONS[n]}
                url = f"/v1/alerts/{alert['id']}/resolve"
                resolved = await client.post(url, json=body, headers=key)
                assert resolved.status_code == 200, resolved.text
            span = {"from": "2026-05-01", "to": "2026-07-01"}
            rate = await csv_report(client, key, "defection-rate", **span)
            by_store = await csv_report(client, key, "defection-rate", **span, by="store")
            by_staff = await csv_report(client, key, "defection-rate", **span, by="staff")
            reasons = await csv_report(client, key, "reasons", **span)
            times = await csv_report(client, key, "response-times", **span)
            json_reasons = (
                await client.get("/v1/reports/reasons", params=span, headers=key)
            ).json()["rows"]

    escaped = {f"'{name}" for name in FORMULA_IDS}
    assert {row["store_id"] for row in by_store} == escaped
    assert {row["staff_id"] for row in by_staff} == escaped
    assert {row["store_id"] for row in times} == escaped
    assert {(row["reason"], row["store_id"]) for row in reasons} == {
        (f"'{reason}", f"'{FORMULA_IDS[n]}") for n, reason in enumerate(FORMULA_REASONS)
    }
    assert {row["reason"] for row in json_reasons} == set(FORMULA_REASONS)  # JSON: as it is
    # A number the service computed is written as the number, negative or not.
    assert [(row["period_start"], row["net"]) for row in rate] == [
        ("2026-05-01", "4"),
        ("2026-06-01", "-2"),
    ]
    for report in (rate, by_store, by_staff, reasons, times):
        for row in report:
            for cell in row.values():
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")) or a_number(cell)


async def test_open_alerts_at_formula_stores_are_quoted_in_the_value_at_risk_csv(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapse_at_formula_stores(client, keys, clock)
    rows = await csv_report(client, keys.read, "value-at-risk")
    assert sorted(row["store_id"] for row in rows) == sorted(f"'{n}" for n in FORMULA_IDS)
    assert all(a_number(row["value_at_risk"]) and a_number(row["alerts"]) for row in rows)


async def test_a_customer_lost_with_two_alerts_is_counted_and_valued_once(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys
) -> None:
    """X stopped coming (worth 100) and spent less (40) before; both alerts were resolved as
    lost for price on one call. Y (30) too, on one alert. Price lost two customers worth
    130, not three alerts worth 170."""
    from app.alerts.repository import insert_alerts

    resolved = datetime(2026, 5, 10, 12, tzinfo=UTC)

    def alert(customer: str, rule: str, value: str) -> dict[str, Any]:
        return {
            "customer_id": customer,
            "rule": rule,
            "status": "resolved",
            "severity": "low",
            "score": 1.0,
            "value_at_risk": Decimal(value),
            "store_id": "north",
            "evidence": {},
            "policy_version": 0,
            "opened_at": resolved - timedelta(days=3),
            "updated_at": resolved,
            "resolved_at": resolved,
            "resolution": "lost",
            "resolved_by": "ola",
            "reason": "price",
        }

    rows = [
        alert("X", "inactivity", "100"),
        alert("X", "spend_drop", "40"),
        alert("Y", "inactivity", "30"),
    ]
    await app.state.transactions.run(lambda connection: insert_alerts(connection, rows))
    span = {"from": "2026-05-01", "to": "2026-06-01"}
    body = (await client.get("/v1/reports/reasons", params=span, headers=keys.read)).json()
    assert [
        (r["reason"], r["outcome"], r["alerts"], r["customers"], Decimal(r["value_lost"]))
        for r in body["rows"]
    ] == [("price", "lost", 3, 2, Decimal(130))]
