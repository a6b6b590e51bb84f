"""Plans: resolving an alert with a reason opens the policy's playbook for it; /v1/plans
lists, closes and follows them; the reasons report counts them."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.kit.auth import Scope
from app.kit.settings import Settings
from app.main import create_app
from app.policy.playbooks import DEFAULT_PLAYBOOKS
from tests.conftest import Clock, Keys, ScoredTransport, _truncate, event, make_key
from tests.test_alerts import post
from tests.test_alerts_api import lapse
from tests.test_page import sign_in
from tests.test_reports import chain, work

pytestmark = pytest.mark.anyio

PRICE = DEFAULT_PLAYBOOKS["price"]


async def resolve(
    client: httpx.AsyncClient, keys: Keys, alert_id: int, outcome: str, reason: str | None = None
) -> dict[str, Any]:
    body = {"outcome": outcome, **({"reason": reason} if reason else {})}
    answer = await client.post(f"/v1/alerts/{alert_id}/resolve", json=body, headers=keys.read)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def plan(client: httpx.AsyncClient, keys: Keys, plan_id: int) -> dict[str, Any]:
    answer = await client.get(f"/v1/plans/{plan_id}", headers=keys.read)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def plans(client: httpx.AsyncClient, keys: Keys, **params: Any) -> list[str]:
    answer = await client.get("/v1/plans", params=params, headers=keys.read)
    assert answer.status_code == 200, answer.text
    return [item["customer_id"] for item in answer.json()["items"]]


async def test_resolving_lost_for_price_opens_the_policys_plan(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapse(client, keys, clock)  # at 2026-05-01 09:00
    resolved = await resolve(client, keys, alerts["big"]["id"], "lost", "price")
    assert resolved["plan_id"] is not None
    opened = await plan(client, keys, resolved["plan_id"])
    assert {key: value for key, value in opened.items() if key != "id"} == {
        "customer_id": "big",
        "reason": "price",
        "action": PRICE.action,
        "owner": "head_office",
        "store_id": "north",
        "alert_id": alerts["big"]["id"],
        "opened_by": "ops",
        "opened_at": "2026-05-01T09:00:00Z",
        "follow_up_on": "2026-05-15",  # 14 days
        "status": "open",
        "closed_at": None,
        "closed_by": None,
        "note": None,
        "policy_version": 0,
        "customer_returned_on": None,
    }
    # The alert, its feed event (and so its webhook) say which plan it opened.
    detail = (await client.get(f"/v1/alerts/{alerts['big']['id']}", headers=keys.read)).json()
    assert detail["alert"]["plan_id"] == opened["id"]
    assert detail["history"][-1]["type"] == "alert.resolved"
    assert detail["history"][-1]["alert"]["plan_id"] == opened["id"]


async def test_a_customers_alerts_resolved_together_open_one_plan(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """X stopped buying a category and spends less: two alerts, one call on the page."""
    from app.alerts.repository import insert_alerts

    opened_at = datetime(2026, 4, 20, 9, tzinfo=UTC)
    clock.set("2026-05-01T09:00:00+00:00")

    def alert(rule: str, value: str) -> dict[str, Any]:
        return {
            "customer_id": "X",
            "rule": rule,
            "status": "open",
            "severity": "low",
            "score": 0.5,
            "value_at_risk": Decimal(value),
            "store_id": "north",
            "evidence": {"summary": rule},
            "policy_version": 0,
            "opened_at": opened_at,
            "updated_at": opened_at,
            "resolved_at": None,
            "resolution": None,
        }

    rows = [alert("spend_drop", "40"), alert("category_lapse", "10")]
    await app.state.transactions.run(lambda connection: insert_alerts(connection, rows))
    await sign_in(client, keys)
    answer = await client.post("/ui/cases/X/resolve", data={"outcome": "lost", "reason": "price"})
    assert answer.status_code == 200, answer.text
    # The toast says what the reason set in motion.
    assert "Plan for head office, follow up by 2026-05-15" in answer.text
    assert PRICE.action.replace("'", "&#39;") in answer.text
    listed = (
        await client.get("/v1/alerts", params={"status": "resolved"}, headers=keys.read)
    ).json()
    plan_ids = {item["plan_id"] for item in listed["items"]}
    assert len(listed["items"]) == 2
    assert len(plan_ids) == 1
    assert await plans(client, keys, customer_id="X") == ["X"]
    manager = await client.get("/ui/manager")
    assert 'id="plans-due-title"' in manager.text  # due 2026-05-15: not within the week
    assert "No open plan falls due this week." in manager.text


async def test_a_reason_without_a_playbook_opens_no_plan(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapse(client, keys, clock)
    only_price = {
        "playbooks": {
            "price": {"action": "Send the price list", "owner": "store", "follow_up_days": 3}
        }
    }
    stored = await client.put("/v1/policy", json=only_price, headers=keys.manage)
    assert stored.status_code == 200, stored.text
    assert list(stored.json()["playbooks"]) == ["price"]
    assert (await resolve(client, keys, alerts["big"]["id"], "lost", "staff_attitude"))[
        "plan_id"
    ] is None
    assert (await resolve(client, keys, alerts["small"]["id"], "not_a_defection"))[
        "plan_id"
    ] is None
    mid = await resolve(client, keys, alerts["mid"]["id"], "won_back", "price")
    opened = await plan(client, keys, mid["plan_id"])
    assert (opened["action"], opened["owner"], opened["follow_up_on"]) == (
        "Send the price list",
        "store",
        "2026-05-04",
    )
    assert opened["policy_version"] == 1
    assert await plans(client, keys) == ["mid"]


async def worked(client: httpx.AsyncClient, keys: Keys, clock: Clock) -> dict[str, int]:
    """big: lost for price (head office, due 05-15); mid: won back, staff attitude (store,
    05-08); small: lost, wait time (store, 05-15). Plans big, mid, small in that order."""
    alerts = await lapse(client, keys, clock)
    ids = {}
    for name, outcome, reason in (
        ("big", "lost", "price"),
        ("mid", "won_back", "staff_attitude"),
        ("small", "lost", "wait_time"),
    ):
        ids[name] = (await resolve(client, keys, alerts[name]["id"], outcome, reason))["plan_id"]
    return ids


async def test_plans_are_listed_soonest_first_and_filtered(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await worked(client, keys, clock)
    assert await plans(client, keys) == ["mid", "big", "small"]
    assert await plans(client, keys, status="open") == ["mid", "big", "small"]
    assert await plans(client, keys, status="done") == []
    assert await plans(client, keys, owner="store") == ["mid", "small"]
    assert await plans(client, keys, owner=["store", "head_office"]) == ["mid", "big", "small"]
    assert await plans(client, keys, reason="price") == ["big"]
    assert await plans(client, keys, reason=["price", "wait_time"]) == ["big", "small"]
    assert await plans(client, keys, store_id="south") == ["small"]
    assert await plans(client, keys, customer_id="mid") == ["mid"]
    assert await plans(client, keys, due_before="2026-05-09") == ["mid"]
    assert await plans(client, keys, due_before="2026-05-08") == []

    first = (await client.get("/v1/plans", params={"limit": 2}, headers=keys.read)).json()
    assert ([i["customer_id"] for i in first["items"]], first["has_more"]) == (["mid", "big"], True)
    rest = (
        await client.get(
            "/v1/plans", params={"limit": 2, "cursor": first["next_cursor"]}, headers=keys.read
        )
    ).json()
    assert ([i["customer_id"] for i in rest["items"]], rest["has_more"]) == (["small"], False)
    assert rest["next_cursor"] is None
    forged = await client.get("/v1/plans", params={"cursor": "bm9wZQ"}, headers=keys.read)
    assert forged.status_code == 400
    assert [e["pointer"] for e in forged.json()["errors"]] == ["/query/cursor"]
    await sign_in(client, keys)
    manager = (await client.get("/ui/manager")).text  # today 05-01: mid's is due in a week
    due = manager.split('id="plans-due"', 1)[1].split("</table>", 1)[0]
    assert ("/ui/customers/mid" in due, "/ui/customers/big" in due) == (True, False)


async def test_a_plan_is_done_or_cancelled_once(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    ids = await worked(client, keys, clock)
    clock.set("2026-05-06T15:00:00+00:00")
    done = await client.post(
        f"/v1/plans/{ids['big']}/done",
        json={"note": " Price matched on coffee and bread. ", "by": "Ola"},
        headers=keys.read,
    )
    assert done.status_code == 200, done.text
    assert {k: done.json()[k] for k in ("status", "closed_at", "closed_by", "note")} == {
        "status": "done",
        "closed_at": "2026-05-06T15:00:00Z",
        "closed_by": "Ola",
        "note": "Price matched on coffee and bread.",
    }
    cancelled = await client.post(f"/v1/plans/{ids['mid']}/cancel", headers=keys.read)
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    assert cancelled.json()["closed_by"] == "ops"  # the key's name
    for path in (f"{ids['big']}/done", f"{ids['big']}/cancel", f"{ids['mid']}/done"):
        again = await client.post(f"/v1/plans/{path}", json={}, headers=keys.read)
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "plan_closed"
    assert (await client.post("/v1/plans/999999/done", headers=keys.read)).status_code == 404
    assert (await client.get("/v1/plans/999999", headers=keys.read)).status_code == 404
    assert (
        await client.post(f"/v1/plans/{ids['small']}/done", headers=keys.ingest)
    ).status_code == 403
    assert await plans(client, keys, status="open") == ["small"]
    assert await plans(client, keys, status=["done", "cancelled"]) == ["mid", "big"]
    await sign_in(client, keys)
    page = await client.get("/ui/customers/big")
    assert "Price matched on coffee and bread." in page.text
    assert PRICE.action.replace("'", "&#39;") in page.text


@pytest.mark.parametrize(
    ("params", "pointer"),
    [
        ({"status": "gone"}, "/query/status/0"),
        ({"owner": "ceo"}, "/query/owner/0"),
        ({"due_before": "May"}, "/query/due_before"),
        ({"due_before": "0"}, "/query/due_before"),
        ({"limit": 0}, "/query/limit"),
        ({"reason": "a\u0000b"}, "/query/reason/0"),
        ({"statuss": "open"}, "/query/statuss"),
    ],
)
async def test_bad_plan_filters_are_refused_naming_them(
    client: httpx.AsyncClient, keys: Keys, params: dict[str, Any], pointer: str
) -> None:
    answer = await client.get("/v1/plans", params=params, headers=keys.read)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert pointer in {error["pointer"] for error in answer.json()["errors"]}


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"note": "x" * 2001}, "/note"),
        ({"note": "a\u0000b"}, "/note"),
        ({"note": "ok", "by": "a\u0000"}, "/by"),
        ({"note": "ok", "extra": 1}, "/extra"),
        ({"note": 5}, "/note"),
    ],
)
async def test_bad_closings_are_refused_by_field_and_change_nothing(
    client: httpx.AsyncClient, keys: Keys, clock: Clock, body: dict[str, Any], pointer: str
) -> None:
    ids = await worked(client, keys, clock)
    for action in ("done", "cancel"):
        answer = await client.post(f"/v1/plans/{ids['big']}/{action}", json=body, headers=keys.read)
        assert answer.status_code == 422, answer.text
        assert [error["pointer"] for error in answer.json()["errors"]] == [pointer]
    unchanged = await plan(client, keys, ids["big"])
    assert (unchanged["status"], unchanged["closed_at"], unchanged["note"]) == ("open", None, None)


@pytest.mark.parametrize(
    ("playbooks", "pointer"),
    [
        (
            {"parking": {"action": "Fix it", "owner": "store", "follow_up_days": 7}},
            "/playbooks/parking",
        ),
        (
            {"price": {"action": "", "owner": "store", "follow_up_days": 7}},
            "/playbooks/price/action",
        ),
        (
            {"price": {"action": "x" * 301, "owner": "store", "follow_up_days": 7}},
            "/playbooks/price/action",
        ),
        (
            {"price": {"action": "a\u0000", "owner": "store", "follow_up_days": 7}},
            "/playbooks/price/action",
        ),
        (
            {"price": {"action": "Call", "owner": "ceo", "follow_up_days": 7}},
            "/playbooks/price/owner",
        ),
        (
            {"price": {"action": "Call", "owner": "store", "follow_up_days": 0}},
            "/playbooks/price/follow_up_days",
        ),
        (
            {"price": {"action": "Call", "owner": "store", "follow_up_days": 366}},
            "/playbooks/price/follow_up_days",
        ),
        ({"price": {"action": "Call", "owner": "store"}}, "/playbooks/price/follow_up_days"),
    ],
)
async def test_a_bad_playbook_is_refused_naming_it(
    client: httpx.AsyncClient, keys: Keys, playbooks: dict[str, Any], pointer: str
) -> None:
    answer = await client.put("/v1/policy", json={"playbooks": playbooks}, headers=keys.manage)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert [error["pointer"] for error in answer.json()["errors"]] == [pointer]
    assert (await client.get("/v1/policy", headers=keys.manage)).json()["version"] == 0


async def test_omitted_playbooks_default_to_those_of_the_configured_reasons(
    settings: Settings, clock: Clock
) -> None:
    app = create_app(
        settings.model_copy(update={"alert_reasons": ["price", "parking"]}), clock=clock
    )
    async with LifespanManager(app):
        await _truncate(app)
        key = {"Authorization": f"Bearer {await make_key(app, 'admin', Scope.MANAGE)}"}
        transport = ScoredTransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as client:
            stored = await client.put("/v1/policy", json={}, headers=key)
            assert stored.status_code == 200, stored.text
            assert list(stored.json()["playbooks"]) == ["price"]
            # What GET gives can be sent back as it is.
            body = {
                k: v
                for k, v in stored.json().items()
                if k not in ("version", "source", "created_by", "created_at")
            }
            again = await client.put("/v1/policy", json=body, headers=key)
            assert again.status_code == 200, again.text
            parking = {"action": "Validate their ticket", "owner": "store", "follow_up_days": 7}
            both = await client.put(
                "/v1/policy", json={"playbooks": {"parking": parking}}, headers=key
            )
            assert list(both.json()["playbooks"]) == ["parking"]


async def test_the_reasons_report_counts_plans_and_who_came_back_after_them(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """As in test_reports: A won back for price on 05-02 09:00, B lost to a competitor's
    offer on 05-03 09:00, C closed without a reason. Each reason opens a plan. B comes in on
    05-03 15:00, the day their plan opened (not after it); A on 05-04: A came back."""
    alerts = await chain(client, keys, clock)
    await work(client, keys, clock, alerts)
    clock.set("2026-05-04T12:00:00+00:00")
    await post(
        client,
        keys,
        [
            event("B-back", customer_id="B", store_id="north", occurred_at="2026-05-03T15:00:00Z"),
            event("A-back", customer_id="A", store_id="north", occurred_at="2026-05-04T10:00:00Z"),
        ],
    )
    span = {"from": "2026-05-01", "to": "2026-06-01"}
    rows = (await client.get("/v1/reports/reasons", params=span, headers=keys.read)).json()["rows"]
    assert [
        (
            r["reason"],
            r["outcome"],
            r["alerts"],
            r["customers"],
            r["plans_opened"],
            r["returned_after_plan"],
        )
        for r in rows
    ] == [
        ("competitor_offer", "lost", 1, 1, 1, 0),  # B came the same day only
        ("price", "won_back", 1, 1, 1, 1),
    ]
    table = await client.get(
        "/v1/reports/reasons", params=span, headers={**keys.read, "Accept": "text/csv"}
    )
    parsed = list(csv.reader(io.StringIO(table.text)))
    assert parsed[0] == [
        "reason",
        "store_id",
        "outcome",
        "alerts",
        "value_lost",
        "customers",
        "plans_opened",
        "returned_after_plan",
    ]
    assert [row[-2:] for row in parsed[1:]] == [["1", "0"], ["1", "1"]]
    a_plan = await plan(client, keys, await plan_of(client, keys, "A"))
    assert (a_plan["opened_at"], a_plan["customer_returned_on"]) == (
        "2026-05-02T09:00:00Z",
        "2026-05-04",
    )
    b_plan = await plan(client, keys, await plan_of(client, keys, "B"))
    assert (b_plan["reason"], b_plan["customer_returned_on"]) == ("competitor_offer", None)


async def plan_of(client: httpx.AsyncClient, keys: Keys, customer: str) -> int:
    answer = await client.get("/v1/plans", params={"customer_id": customer}, headers=keys.read)
    (item,) = answer.json()["items"]
    return int(item["id"])
