"""The page's views and actions on both databases (the browser tests run on SQLite), and
the alert actions it added to the API: assign and notes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Clock, Keys
from tests.test_alerts_api import lapse

pytestmark = pytest.mark.anyio


async def sign_in(client: httpx.AsyncClient, keys: Keys, person: str = "Ola") -> None:
    answer = await client.post("/ui/login", data={"key": keys.raw["read"], "person": person})
    assert (answer.status_code, answer.headers["location"]) == (303, "/ui/")


def customers_on(page: str) -> list[str]:
    return [part.split('"', 1)[0] for part in page.split('<li class="case" data-customer="')[1:]]


async def test_alerts_are_assigned_and_noted_in_their_history(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapse(client, keys, clock)
    big = alerts["big"]["id"]
    assigned = await client.post(
        f"/v1/alerts/{big}/assign", json={"to": "Jon", "by": "Ola"}, headers=keys.read
    )
    assert (assigned.status_code, assigned.json()["assigned_to"]) == (200, "Jon")
    noted = await client.post(
        f"/v1/alerts/{big}/notes", json={"text": " No answer. "}, headers=keys.read
    )
    assert (noted.status_code, noted.json()["note"]) == (200, "No answer.")
    listed = await client.get("/v1/alerts", params={"assigned_to": "Jon"}, headers=keys.read)
    assert [a["customer_id"] for a in listed.json()["items"]] == ["big"]
    history = (await client.get(f"/v1/alerts/{big}", headers=keys.read)).json()["history"]
    assert [(e["type"], e["actor"]) for e in history[:2]] == [
        ("alert.opened", None),
        ("alert.assigned", "Ola"),
    ]
    assert history[2]["type"] == "alert.noted"
    assert history[2]["actor"]  # the key's name when no `by` is given
    assert history[2]["alert"]["note"] == "No answer."
    unassigned = await client.post(f"/v1/alerts/{big}/assign", json={"to": None}, headers=keys.read)
    assert unassigned.json()["assigned_to"] is None
    # Webhook endpoints may subscribe to the new kinds.
    created = await client.post(
        "/v1/webhooks/endpoints",
        json={"url": "http://127.0.0.1:9/h", "event_types": ["alert.assigned", "alert.noted"]},
        headers=keys.manage,
    )
    assert created.status_code == 201, created.text


async def test_im_calling_acknowledges_and_takes_the_case_in_one_change(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapse(client, keys, clock)
    await client.post(
        f"/v1/alerts/{alerts['mid']['id']}/assign", json={"to": "Jon"}, headers=keys.read
    )
    await sign_in(client, keys, "Ola")
    for customer, owner in (("big", "Ola"), ("mid", "Jon")):  # mid was Jon's already
        answer = await client.post(f"/ui/cases/{customer}/acknowledge")
        assert answer.status_code == 200, answer.text
        alert_id = alerts[customer]["id"]
        detail = (await client.get(f"/v1/alerts/{alert_id}", headers=keys.read)).json()
        assert (detail["alert"]["status"], detail["alert"]["assigned_to"]) == (
            "acknowledged",
            owner,
        )
        last = detail["history"][-1]
        assert (last["type"], last["actor"], last["alert"]["assigned_to"]) == (
            "alert.acknowledged",
            "Ola",
            owner,
        )
    big_history = (await client.get(f"/v1/alerts/{alerts['big']['id']}", headers=keys.read)).json()
    assert [e["type"] for e in big_history["history"]] == ["alert.opened", "alert.acknowledged"]


@pytest.mark.parametrize(
    ("path", "body", "pointer"),
    [
        ("assign", {"to": "x" * 101}, "/to"),
        ("assign", {}, "/to"),
        ("notes", {"text": ""}, "/text"),
        ("notes", {"text": "   "}, "/text"),
        ("notes", {"text": "a\u0000b"}, "/text"),
        ("notes", {"text": "x" * 2001}, "/text"),
        ("notes", {"text": "ok", "extra": 1}, "/extra"),
    ],
)
async def test_bad_assignments_and_notes_are_refused_by_field(
    client: httpx.AsyncClient,
    keys: Keys,
    clock: Clock,
    path: str,
    body: dict[str, Any],
    pointer: str,
) -> None:
    alerts = await lapse(client, keys, clock)
    answer = await client.post(
        f"/v1/alerts/{alerts['big']['id']}/{path}", json=body, headers=keys.read
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert [error["pointer"] for error in answer.json()["errors"]] == [pointer]
    after = (await client.get(f"/v1/alerts/{alerts['big']['id']}", headers=keys.read)).json()
    assert after["history"][-1]["type"] == "alert.opened"  # nothing half-written


async def test_the_call_list_filters_searches_and_works_cases(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapse(client, keys, clock)
    assert (await client.get("/ui/")).status_code == 303  # signed out: to the sign-in form
    await sign_in(client, keys)
    page = await client.get("/ui/")
    assert page.status_code == 200
    assert customers_on(page.text) == ["big", "mid", "small"]
    assert "Customers 1\u20133 of 3" in page.text
    assert customers_on((await client.get("/ui/", params={"q": "m"})).text) == ["mid"]
    for pattern in ("%", "_ig", "b%"):  # LIKE's wildcards are searched for as themselves
        assert customers_on((await client.get("/ui/", params={"q": pattern})).text) == []
    assert customers_on((await client.get("/ui/", params={"store": "south"})).text) == ["small"]
    assert customers_on((await client.get("/ui/", params={"severity": "high"})).text) == ["big"]
    assert customers_on((await client.get("/ui/", params={"sort": "oldest"})).text)[0] in alerts
    # Unknown filter values are ignored, never an error.
    odd = await client.get("/ui/", params={"rule": "nope", "status": "gone", "page": "1"})
    assert customers_on(odd.text) == ["big", "mid", "small"]

    work = "/ui/cases/{}/{}"
    assert (await client.post(work.format("mid", "assign"), data={"to": "Jon"})).status_code == 200
    assert customers_on((await client.get("/ui/", params={"assignee": "Jon"})).text) == ["mid"]
    assert (
        await client.post(work.format("mid", "note"), data={"note": "Call after six"})
    ).status_code == 200
    tomorrow = (clock() + timedelta(days=1)).date()
    snoozed = await client.post(work.format("small", "snooze"), data={"until": str(tomorrow)})
    assert snoozed.status_code == 200
    assert "snoozed until" in snoozed.text
    assert customers_on((await client.get("/ui/")).text) == ["big", "mid"]
    assert customers_on((await client.get("/ui/", params={"status": "snoozed"})).text) == ["small"]
    past = await client.post(work.format("big", "snooze"), data={"until": "2000-01-01"})
    assert past.status_code == 422
    assert "future" in past.text
    refused = await client.post(work.format("big", "resolve"), data={"outcome": "lost"})
    assert refused.status_code == 422
    assert "reason" in refused.text
    resolved = await client.post(
        work.format("big", "resolve"),
        data={"outcome": "lost", "reason": "price", "channel": "phone"},
    )
    assert resolved.status_code == 200
    assert resolved.headers["hx-trigger"] == "radar:changed"
    big = (await client.get(f"/v1/alerts/{alerts['big']['id']}", headers=keys.read)).json()["alert"]
    assert (
        big["status"],
        big["resolution"],
        big["reason"],
        big["resolved_by"],
        big["contact_channel"],
    ) == (
        "resolved",
        "lost",
        "price",
        "Ola",
        "phone",
    )
    again = await client.post(work.format("big", "acknowledge"))
    assert "nothing left" in again.text

    customer = await client.get("/ui/customers/mid")
    assert customer.status_code == 200
    assert "Call after six" in customer.text
    assert "assigned" in customer.text
    assert (await client.get("/ui/customers/nobody")).status_code == 404
    manager = await client.get("/ui/manager")
    assert manager.status_code == 200
    assert "price" in manager.text
    exported = await client.get("/ui/manager/reasons.csv")
    api = await client.get("/v1/reports/reasons", headers={**keys.read, "Accept": "text/csv"})
    assert exported.text == api.text
    assert "price" in exported.text
    assert (await client.get("/ui/manager/other.csv")).status_code == 404
    changes = (await client.get("/ui/changes", params={"after": 0, "wait": 0})).json()
    assert changes["changed"] is True
    assert changes["latest"] > 0
    none = await client.get("/ui/changes", params={"after": changes["latest"], "wait": 0})
    assert none.json() == {"latest": changes["latest"], "changed": False}


async def test_a_change_from_the_same_host_over_https_is_taken(
    client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """Behind a proxy that ends TLS the service sees http while the browser's Origin says
    https: the same host is the same page; another host is refused."""
    await lapse(client, keys, clock)
    await sign_in(client, keys)
    host = client.base_url.netloc.decode()
    same = await client.post("/ui/cases/big/acknowledge", headers={"Origin": f"https://{host}"})
    assert same.status_code == 200, same.text
    other = await client.post(
        "/ui/cases/mid/acknowledge", headers={"Origin": f"https://elsewhere.{host}"}
    )
    assert other.status_code == 403
