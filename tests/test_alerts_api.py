"""/v1/alerts: pages and filters, the change feed, and people working alerts."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.alerts.queries import purge_feed
from app.alerts.service import sweep
from app.kit.auth import Scope
from app.kit.settings import Settings
from app.main import create_app
from tests.conftest import Clock, Keys, ScoredTransport, _truncate, make_key
from tests.test_alerts import post, visits, weekly

pytestmark = pytest.mark.anyio

# Three lapsed weekly customers, worth more or less, in two stores.
CUSTOMERS = {"big": ("900", "north"), "mid": ("10", "north"), "small": ("5", "south")}


async def lapse(client: httpx.AsyncClient, keys: Keys, clock: Clock) -> dict[str, dict[str, Any]]:
    """Open one inactivity alert per customer; return them by customer."""
    clock.set("2026-05-01T09:00:00+00:00")
    for name, (amount, store) in CUSTOMERS.items():
        events = visits(name, weekly(date(2026, 1, 5), 12), amount=amount)
        for item in events:
            item["store_id"] = store
        await post(client, keys, events)
    listed = (await client.get("/v1/alerts", headers=keys.read)).json()
    return {alert["customer_id"]: alert for alert in listed["items"]}


async def test_alerts_are_listed_by_value_at_risk_and_filtered(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapse(client, keys, clock)
    assert set(alerts) == set(CUSTOMERS)
    assert {a["severity"] for a in alerts.values()} == {"high", "medium", "low"}

    async def ids(**params: Any) -> list[str]:
        response = await client.get("/v1/alerts", params=params, headers=keys.read)
        assert response.status_code == 200, response.text
        return [alert["customer_id"] for alert in response.json()["items"]]

    assert await ids() == ["big", "mid", "small"]  # the default: value at risk, highest first
    assert await ids(sort="value_at_risk") == ["small", "mid", "big"]
    assert await ids(store_id="north") == ["big", "mid"]
    assert await ids(severity=["high", "low"]) == ["big", "small"]
    assert await ids(customer_id="mid") == ["mid"]
    assert await ids(rule="frequency_drop") == []
    assert await ids(status="open") == ["big", "mid", "small"]
    assert await ids(status="resolved") == []
    threshold = float(alerts["mid"]["value_at_risk"])
    assert await ids(min_value_at_risk=threshold) == ["big", "mid"]
    assert await ids(opened_after="2026-05-01T09:00:00Z") == ["big", "mid", "small"]
    assert await ids(opened_before="2026-05-01T09:00:00Z") == []


async def test_cursor_pages_visit_every_alert_once_in_order(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapse(client, keys, clock)
    for sort in ("-value_at_risk", "value_at_risk", "-opened_at", "opened_at"):
        seen: list[int] = []
        cursor = None
        for _ in range(5):
            params: dict[str, Any] = {"limit": 1, "sort": sort}
            if cursor:
                params["cursor"] = cursor
            body = (await client.get("/v1/alerts", params=params, headers=keys.read)).json()
            seen += [alert["id"] for alert in body["items"]]
            cursor = body["next_cursor"]
            assert body["has_more"] is (cursor is not None)
            if cursor is None:
                break
        everything = (
            await client.get("/v1/alerts", params={"sort": sort}, headers=keys.read)
        ).json()
        assert seen == [alert["id"] for alert in everything["items"]]
        assert len(seen) == 3


@pytest.mark.parametrize(
    ("params", "status", "pointer"),
    [
        ({"cursor": "not-a-cursor"}, 400, "/query/cursor"),
        ({"status": "sleeping"}, 422, "/query/status/0"),
        ({"limit": 0}, 422, "/query/limit"),
        ({"limit": 201}, 422, "/query/limit"),
        ({"sort": "customer_id"}, 422, "/query/sort"),
        ({"min_value_at_risk": "-1"}, 422, "/query/min_value_at_risk"),
        ({"opened_after": "yesterday"}, 422, "/query/opened_after"),
    ],
)
async def test_bad_list_parameters_are_refused_naming_them(
    client: httpx.AsyncClient, keys: Keys, params: dict[str, Any], status: int, pointer: str
) -> None:
    response = await client.get("/v1/alerts", params=params, headers=keys.read)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert pointer in {error["pointer"] for error in response.json()["errors"]}


async def test_a_cursor_of_another_sort_is_refused(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapse(client, keys, clock)
    first = (await client.get("/v1/alerts", params={"limit": 1}, headers=keys.read)).json()
    response = await client.get(
        "/v1/alerts",
        params={"limit": 1, "sort": "opened_at", "cursor": first["next_cursor"]},
        headers=keys.read,
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"


async def test_working_an_alert_records_who_did_what(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alert = (await lapse(client, keys, clock))["big"]
    url = f"/v1/alerts/{alert['id']}"

    acknowledged = await client.post(f"{url}/acknowledge", json={"by": "maria"}, headers=keys.read)
    assert acknowledged.status_code == 200, acknowledged.text
    assert (acknowledged.json()["status"], acknowledged.json()["acknowledged_by"]) == (
        "acknowledged",
        "maria",
    )
    again = await client.post(f"{url}/acknowledge", headers=keys.read)
    assert again.status_code == 409
    assert again.json()["code"] == "already_acknowledged"

    past = await client.post(
        f"{url}/snooze", json={"until": "2026-04-01T00:00:00Z"}, headers=keys.read
    )
    assert past.status_code == 422
    assert {e["pointer"] for e in past.json()["errors"]} == {"/until"}
    snoozed = await client.post(
        f"{url}/snooze", json={"until": "2026-05-03T09:00:00Z"}, headers=keys.read
    )
    assert snoozed.json()["status"] == "snoozed"

    no_reason = await client.post(f"{url}/resolve", json={"outcome": "lost"}, headers=keys.read)
    assert no_reason.status_code == 422
    assert {e["pointer"] for e in no_reason.json()["errors"]} == {"/reason"}
    unknown = await client.post(
        f"{url}/resolve", json={"outcome": "lost", "reason": "astrology"}, headers=keys.read
    )
    assert unknown.status_code == 422
    assert (await client.get(url, headers=keys.read)).json()["alert"]["status"] == "snoozed"

    resolved = await client.post(
        f"{url}/resolve",
        json={
            "outcome": "lost",
            "reason": "competitor_offer",
            "note": "Moved to the rival's card.",
            "channel": "phone",
        },
        headers=keys.read,
    )
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert (body["status"], body["resolution"], body["reason"]) == (
        "resolved",
        "lost",
        "competitor_offer",
    )
    assert (body["resolved_by"], body["contact_channel"]) == ("ops", "phone")  # the key's name
    for action, payload in (("acknowledge", {}), ("snooze", {"until": "2027-01-01T00:00:00Z"})):
        late = await client.post(f"{url}/{action}", json=payload, headers=keys.read)
        assert late.status_code == 409
        assert late.json()["code"] == "alert_resolved"

    detail = (await client.get(url, headers=keys.read)).json()
    assert detail["customer"]["customer_id"] == "big"
    assert detail["customer"]["visit_days"] == 12
    assert [(h["type"], h["actor"]) for h in detail["history"]] == [
        ("alert.opened", None),
        ("alert.acknowledged", "maria"),
        ("alert.snoozed", "ops"),
        ("alert.resolved", "ops"),
    ]
    assert (await client.get("/v1/alerts/999999", headers=keys.read)).status_code == 404
    missing = await client.post("/v1/alerts/999999/acknowledge", headers=keys.read)
    assert missing.status_code == 404


async def test_a_snooze_ends_by_itself_and_a_resolved_lapse_is_not_reopened(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapse(client, keys, clock)
    big, mid = alerts["big"], alerts["mid"]
    until = datetime.fromisoformat("2026-05-03T09:00:00+00:00")
    await client.post(
        f"/v1/alerts/{big['id']}/snooze", json={"until": until.isoformat()}, headers=keys.read
    )
    await client.post(
        f"/v1/alerts/{mid['id']}/resolve",
        json={"outcome": "not_worth_retaining"},
        headers=keys.read,
    )

    clock.set(until)
    await sweep(app.state.transactions, app.state.evaluator, clock)
    back = (await client.get(f"/v1/alerts/{big['id']}", headers=keys.read)).json()
    assert back["alert"]["status"] == "open"
    assert back["history"][-1]["type"] == "alert.updated"
    # The resolved customer is still lapsed, but a person closed that lapse: no new alert.
    clock.set(until + timedelta(days=30))
    await sweep(app.state.transactions, app.state.evaluator, clock)
    mids = (await client.get("/v1/alerts", params={"customer_id": "mid"}, headers=keys.read)).json()
    assert [a["id"] for a in mids["items"]] == [mid["id"]]
    # Until they come back and lapse again.
    await post(client, keys, visits("mid", [date(2026, 5, 31)], tag="-back"))
    clock.set(until + timedelta(days=120))
    await sweep(app.state.transactions, app.state.evaluator, clock)
    params = {"customer_id": "mid", "rule": "inactivity", "sort": "opened_at"}
    mids = (await client.get("/v1/alerts", params=params, headers=keys.read)).json()
    assert [(a["id"] == mid["id"], a["status"]) for a in mids["items"]] == [
        (True, "resolved"),
        (False, "open"),
    ]


async def test_the_feed_follows_every_change_in_order_with_etags_and_long_polls(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapse(client, keys, clock)
    feed = await client.get("/v1/alerts/changes", headers=keys.read)
    body = feed.json()
    assert [e["type"] for e in body["events"]] == ["alert.opened"] * 3
    seqs = [e["seq"] for e in body["events"]]
    assert seqs == sorted(seqs)
    cursor = body["next_cursor"]
    assert cursor == seqs[-1]
    assert body["has_more"] is False
    page = await client.get("/v1/alerts/changes", params={"limit": 2}, headers=keys.read)
    assert page.json()["has_more"] is True
    assert page.json()["next_cursor"] == seqs[1]

    idle = await client.get("/v1/alerts/changes", params={"after": cursor}, headers=keys.read)
    assert idle.json()["events"] == []
    etag = idle.headers["etag"]
    unchanged = await client.get(
        "/v1/alerts/changes", params={"after": cursor}, headers={**keys.read, "If-None-Match": etag}
    )
    assert unchanged.status_code == 304

    async def acknowledge_soon() -> None:
        await asyncio.sleep(0.3)
        await client.post(f"/v1/alerts/{alerts['small']['id']}/acknowledge", headers=keys.read)

    waited, _ = await asyncio.gather(
        client.get("/v1/alerts/changes", params={"after": cursor, "wait": 5}, headers=keys.read),
        acknowledge_soon(),
    )
    (event,) = waited.json()["events"]
    assert (event["type"], event["alert_id"], event["actor"]) == (
        "alert.acknowledged",
        alerts["small"]["id"],
        "ops",
    )
    assert event["seq"] > cursor
    assert waited.headers["etag"] != etag

    # Retention: once old events are purged, a cursor before them must resynchronise.
    purged = await app.state.transactions.run(
        lambda c: purge_feed(c, datetime(2030, 1, 1, tzinfo=clock().tzinfo), timedelta(days=30))
    )
    assert purged == 3  # the newest event is always kept
    gone = await client.get("/v1/alerts/changes", params={"after": 0}, headers=keys.read)
    assert gone.status_code == 410
    assert gone.json()["code"] == "cursor_expired"
    kept = await client.get("/v1/alerts/changes", params={"after": seqs[-1]}, headers=keys.read)
    assert [e["seq"] for e in kept.json()["events"]] == [event["seq"]]


async def test_the_workflow_scope_is_configurable(settings: Settings, clock: Clock) -> None:
    app = create_app(settings.model_copy(update={"alert_workflow_scope": "manage"}), clock=clock)
    async with LifespanManager(app):
        await _truncate(app)
        reader = await make_key(app, "ops", Scope.READ)
        manager = await make_key(app, "lead", Scope.MANAGE)
        transport = ScoredTransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as client:
            url = "/v1/alerts/999999/acknowledge"
            refused = await client.post(url, headers={"Authorization": f"Bearer {reader}"})
            assert refused.status_code == 403
            allowed = await client.post(url, headers={"Authorization": f"Bearer {manager}"})
            assert allowed.status_code == 404  # past the scope check: there is no such alert


async def test_a_poller_sees_every_change_once_in_order_under_concurrent_writers(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """Ingest, two sweepers and people working alerts all write the feed at once."""
    from sqlalchemy import select

    from app.models import AlertEvent

    clock.set("2026-03-24T09:00:00+00:00")
    days = weekly(date(2026, 1, 5), 12)
    await post(client, keys, [e for n in range(60) for e in visits(f"s{n:02}", days)], size=600)
    clock.set("2026-06-01T00:00:00+00:00")
    seen: list[int] = []
    done = asyncio.Event()

    async def poll() -> None:
        cursor = 0
        while True:
            response = await client.get(
                "/v1/alerts/changes", params={"after": cursor, "wait": 1}, headers=keys.read
            )
            body = response.json()
            seen.extend(event["seq"] for event in body["events"])
            cursor = body["next_cursor"]
            if done.is_set() and not body["events"] and not body["has_more"]:
                return

    async def sweeper() -> None:
        await sweep(app.state.transactions, app.state.evaluator, clock, batch_size=7)

    async def lapsing_customers() -> None:  # evaluated at ingest: alerts open as they arrive
        for n in range(0, 40, 4):
            events = [e for m in range(n, n + 4) for e in visits(f"i{m:02}", days)]
            await post(client, keys, events)

    async def people() -> None:
        for _ in range(20):
            listed = (
                await client.get(
                    "/v1/alerts", params={"status": "open", "limit": 3}, headers=keys.read
                )
            ).json()
            for alert in listed["items"]:
                await client.post(f"/v1/alerts/{alert['id']}/acknowledge", headers=keys.read)
            await asyncio.sleep(0.01)

    poller = asyncio.create_task(poll())
    await asyncio.gather(sweeper(), sweeper(), lapsing_customers(), people())
    done.set()
    await asyncio.wait_for(poller, timeout=30)

    async with app.state.sessionmaker() as session:
        stored = list(await session.scalars(select(AlertEvent.seq).order_by(AlertEvent.seq)))
    assert len(stored) > 100
    assert seen == stored  # every change, once, in commit order


async def test_a_late_committing_transaction_cannot_slip_behind_a_cursor(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """Transaction A numbers its change first but commits late; B numbers its change after.
    B must not become visible before A: a poller that saw B's seq would skip A's forever."""
    from app.alerts.repository import get, record_events

    alert = (await lapse(client, keys, clock))["big"]
    cursor = (await client.get("/v1/alerts/changes", headers=keys.read)).json()["next_cursor"]
    row = await app.state.transactions.read(lambda c: get(c, alert["id"]))
    assert row is not None
    a_numbered, a_may_commit, b_committed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def transaction(
        name: str, numbered: asyncio.Event | None, hold: asyncio.Event | None
    ) -> None:
        async with app.state.engine.begin() as connection:
            await connection.run_sync(
                lambda c: record_events(c, [("alert.updated", row)], clock(), actor=name)
            )
            if numbered is not None:
                numbered.set()
            if hold is not None:
                await hold.wait()

    a = asyncio.create_task(transaction("a", a_numbered, a_may_commit))
    await a_numbered.wait()

    async def b_then_flag() -> None:
        await transaction("b", None, None)
        b_committed.set()

    b = asyncio.create_task(b_then_flag())
    await asyncio.sleep(0.3)
    assert not b_committed.is_set()  # B waits for A's commit
    feed = (
        await client.get("/v1/alerts/changes", params={"after": cursor}, headers=keys.read)
    ).json()
    assert feed["events"] == []
    a_may_commit.set()
    await asyncio.gather(a, b)
    feed = (
        await client.get("/v1/alerts/changes", params={"after": cursor}, headers=keys.read)
    ).json()
    assert [event["actor"] for event in feed["events"]] == ["a", "b"]


async def test_an_acknowledged_alert_left_unresolved_is_escalated_once(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alert = (await lapse(client, keys, clock))["big"]
    url = f"/v1/alerts/{alert['id']}"
    acknowledged_at = clock()
    await client.post(f"{url}/acknowledge", headers=keys.read)

    async def sweep_at(when: datetime) -> list[str]:
        clock.set(when)
        await sweep(app.state.transactions, app.state.evaluator, clock)
        return [h["type"] for h in (await client.get(url, headers=keys.read)).json()["history"]]

    assert "alert.escalated" not in await sweep_at(acknowledged_at + timedelta(hours=47))
    history = await sweep_at(acknowledged_at + timedelta(hours=48))
    assert history[-1] == "alert.escalated"
    detail = (await client.get(url, headers=keys.read)).json()["alert"]
    assert detail["status"] == "acknowledged"
    assert datetime.fromisoformat(detail["escalated_at"]) == clock()
    later = await sweep_at(acknowledged_at + timedelta(days=10))
    assert later.count("alert.escalated") == 1


async def test_the_call_list_shows_each_customer_once_strongest_reason_first(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    first = date(2025, 9, 1)
    clock.set("2026-05-26T10:00:00+00:00")
    before, after = weekly(first, 28), weekly(first + timedelta(weeks=28), 10)
    # "both" spends less and stopped buying wine: two reasons, one customer to call.
    events = visits("both", before, amount="40", categories=("grocery", "wine"))
    events += visits("both", after, amount="15", categories=("grocery",))
    events += visits("spender", before, amount="400") + visits("spender", after, amount="150")
    for item in events:
        item["store_id"] = "north" if item["customer_id"] == "both" else "south"
    await post(client, keys, events)
    await lapse(client, keys, clock)  # three more: silent since March
    listed = (await client.get("/v1/alerts", params={"limit": 200}, headers=keys.read)).json()
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for alert in listed["items"]:
        by_customer.setdefault(alert["customer_id"], []).append(alert)
    assert {a["rule"] for a in by_customer["both"]} == {"spend_drop", "category_lapse"}

    response = await client.get("/v1/cases", headers=keys.read)
    assert response.status_code == 200, response.text
    cases = response.json()["items"]
    assert sorted(case["customer_id"] for case in cases) == sorted(by_customer)
    values = [Decimal(case["value_at_risk"]) for case in cases]
    assert values == sorted(values, reverse=True)
    both = next(case for case in cases if case["customer_id"] == "both")
    stakes = sorted((Decimal(a["value_at_risk"]) for a in by_customer["both"]), reverse=True)
    assert [Decimal(a["value_at_risk"]) for a in both["alerts"]] == stakes
    assert both["rule"] == both["alerts"][0]["rule"]
    assert both["value_at_risk"] == both["alerts"][0]["value_at_risk"]
    assert both["summary"] == both["alerts"][0]["evidence"]["summary"]
    assert both["store_id"] == "north"

    # Pages of one visit every case once, in the same order.
    seen, cursor = [], None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/cases", params=params, headers=keys.read)).json()
        seen += [case["customer_id"] for case in page["items"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == [case["customer_id"] for case in cases]
    south = (await client.get("/v1/cases", params={"store_id": "south"}, headers=keys.read)).json()
    assert {case["customer_id"] for case in south["items"]} == {"spender", "small"}
    floor = both["value_at_risk"]
    rich = (
        await client.get("/v1/cases", params={"min_value_at_risk": floor}, headers=keys.read)
    ).json()
    assert all(Decimal(c["value_at_risk"]) >= Decimal(floor) for c in rich["items"])
    assert "both" in {c["customer_id"] for c in rich["items"]}

    # A case closes when its last alert resolves.
    for alert in by_customer["both"]:
        url = f"/v1/alerts/{alert['id']}/resolve"
        answer = await client.post(url, json={"outcome": "not_a_defection"}, headers=keys.read)
        assert answer.status_code == 200, answer.text
    left = (await client.get("/v1/cases", headers=keys.read)).json()["items"]
    assert "both" not in {case["customer_id"] for case in left}


@pytest.mark.parametrize(
    "cursor", ["nonsense", "eyJzIjoiY2FzZSJ9", "eyJzIjoiLXZhbHVlX2F0X3Jpc2siLCJ2IjoiMSIsImkiOjF9"]
)
async def test_a_call_list_cursor_it_did_not_issue_is_refused(
    client: httpx.AsyncClient, keys: Keys, cursor: str
) -> None:
    response = await client.get("/v1/cases", params={"cursor": cursor}, headers=keys.read)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_cursor"
