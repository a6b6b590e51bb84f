"""The outreach experiment: control cases are drawn when a case opens, kept off the call
list, the feed and CRM webhooks unless asked for, and the report recovers the effect of
calling planted in a chain (the coverage over many seeds is in bench/outreach.py)."""

from __future__ import annotations

import csv
import io
import math
import random
from datetime import UTC, date, datetime, timedelta
from statistics import NormalDist
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.alerts import holdout
from app.outreach import stats
from app.pipeline import rebuild
from tests.conftest import Clock, Keys
from tests.test_alerts import post, sweep_at, visits, weekly
from tests.test_page import customers_on, sign_in

pytestmark = pytest.mark.anyio

FIRST_VISIT = date(2026, 1, 5)
# Twelve Mondays to 2026-03-23, then silence: by 2026-05-01 every one is overdue.
OPENED = datetime(2026, 5, 1, 9, tzinfo=UTC)


def test_the_draw_is_stable_nested_and_at_the_holdout_share_in_every_stratum() -> None:
    for rule, severity in (("inactivity", "high"), ("spend_drop", "low")):
        ids = [f"card-{n}" for n in range(20_000)]
        control = {c for c in ids if holdout.arm_for(c, rule, severity, 0.1) == "control"}
        wider = {c for c in ids if holdout.arm_for(c, rule, severity, 0.2) == "control"}
        assert control < wider  # raising the holdout keeps every control case in control
        for share, found in ((0.1, control), (0.2, wider)):
            sigma = math.sqrt(share * (1 - share) / len(ids))
            assert abs(len(found) / len(ids) - share) < 4 * sigma
        assert all(holdout.arm_for(c, rule, severity, 0.1) == "control" for c in control)
    assert holdout.arm_for("card-1", "inactivity", "high", 0) is None
    # Strata draw independently: the same customer is not always in the same arm.
    arms = {holdout.arm_for("card-7", r, s, 0.5) for r in ("inactivity", "spend_drop")
            for s in ("low", "medium", "high")}  # fmt: skip
    assert arms == {"contact", "control"}


def test_newcombe_interval_matches_the_published_examples() -> None:
    """Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10."""
    found = stats.rate_difference(56, 70, 48, 80)
    assert found is not None
    assert (round(found.low, 4), round(found.high, 4)) == (0.0524, 0.3339)
    found = stats.rate_difference(9, 10, 3, 10)
    assert found is not None
    assert (round(found.low, 4), round(found.high, 4)) == (0.1705, 0.8090)
    assert stats.rate_difference(1, 5, 0, 0) is None


def test_cases_needed_matches_the_textbook_formula_for_equal_arms() -> None:
    """Equal arms: n per arm = (z_a sqrt(2 pq) + z_b sqrt(p0 q0 + p1 q1))^2 / d^2."""
    z_a, z_b = NormalDist().inv_cdf(0.975), NormalDist().inv_cdf(0.8)
    p0, p1 = 0.3, 0.35
    mean = (p0 + p1) / 2
    per_arm = (
        z_a * math.sqrt(2 * mean * (1 - mean)) + z_b * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    ) ** 2 / (p1 - p0) ** 2
    assert abs(stats.cases_needed(0.3, 0.05, 0.5) - 2 * per_arm) <= 2  # type: ignore[operator]
    # A smaller control group needs more cases in all.
    assert stats.cases_needed(0.3, 0.05, 0.1) > stats.cases_needed(0.3, 0.05, 0.5)  # type: ignore[operator]
    assert stats.cases_needed(0.3, 0.05, 0) is None


async def lapsed_chain(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock, customers: int, share: float
) -> list[dict[str, Any]]:
    """`customers` loyal weekly customers who stopped, with the holdout at `share`, and
    their alerts opened by the sweeper at OPENED; every alert, both arms."""
    policy = {"holdout": share, "outreach": {"window_days": 60}}
    answer = await client.put("/v1/policy", json=policy, headers=keys.manage)
    assert answer.status_code == 200, answer.text
    clock.set(OPENED - timedelta(days=40))
    events = []
    for n in range(customers):
        name = f"c{n:04d}"
        chunk = visits(name, weekly(FIRST_VISIT, 12), amount=str(20 + n % 7))
        for item in chunk:
            item["store_id"] = "north" if n % 2 else "south"
        events += chunk
    # Each customer's twelve visits in one batch: a history cut in two could open (and
    # close) an alert between the batches.
    await post(client, keys, events, size=996)
    await sweep_at(app, clock, OPENED)
    return await listed(client, keys, "/v1/alerts", arm="all")


async def listed(client: httpx.AsyncClient, keys: Keys, path: str, **params: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        query = {**params, "limit": 200, **({"cursor": cursor} if cursor else {})}
        answer = await client.get(path, params=query, headers=keys.read)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def test_control_cases_are_tracked_but_never_listed_fed_or_sent_unless_asked(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    async def endpoint(**fields: Any) -> int:
        body = {"url": "http://127.0.0.1:9/hook", "event_types": ["alert.opened"], **fields}
        answer = await client.post("/v1/webhooks/endpoints", json=body, headers=keys.manage)
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])

    crm, research = await endpoint(), await endpoint(filters={"arms": ["control"]})
    alerts = await lapsed_chain(app, client, keys, clock, 40, 0.5)
    assert len(alerts) == 40  # one inactivity alert each
    arms = {a["customer_id"]: a["arm"] for a in alerts}
    # Each arm is the draw of the opening alert: any replica or a rebuild finds the same.
    for alert in alerts:
        assert alert["case_id"] == alert["id"]
        expected = holdout.arm_for(alert["customer_id"], alert["rule"], alert["severity"], 0.5)
        assert alert["arm"] == expected
    control = {c for c, arm in arms.items() if arm == "control"}
    assert 8 <= len(control) <= 32  # a fair draw of 40 at 0.5 (not all on one side)

    call_list = {a["customer_id"] for a in await listed(client, keys, "/v1/alerts")}
    assert call_list == set(arms) - control
    asked = {a["customer_id"] for a in await listed(client, keys, "/v1/alerts", arm="control")}
    assert asked == control
    cases = {c["customer_id"] for c in await listed(client, keys, "/v1/cases")}
    assert cases == set(arms) - control
    held = {c["customer_id"] for c in await listed(client, keys, "/v1/cases", arm="control")}
    assert held == control

    feed = (
        await client.get("/v1/alerts/changes", params={"limit": 1000}, headers=keys.read)
    ).json()
    assert {e["customer_id"] for e in feed["events"]} == set(arms) - control
    everything = await client.get(
        "/v1/alerts/changes", params={"limit": 1000, "arm": "all"}, headers=keys.read
    )
    assert {e["customer_id"] for e in everything.json()["events"]} == set(arms)

    async def delivered(endpoint_id: int) -> set[str]:
        path = f"/v1/webhooks/endpoints/{endpoint_id}/deliveries"
        answer = await client.get(path, params={"limit": 200}, headers=keys.manage)
        assert answer.status_code == 200, answer.text
        found = set()
        for item in answer.json()["items"]:
            detail = await client.get(f"{path}/{item['id']}", headers=keys.manage)
            found.add(detail.json()["payload"]["data"]["alert"]["customer_id"])
        return found

    assert await delivered(crm) == set(arms) - control
    assert await delivered(research) == control

    await sign_in(client, keys)
    page = (await client.get("/ui/")).text
    assert set(customers_on(page)) == set(arms) - control
    held_page = (await client.get("/ui/", params={"group": "control"})).text
    assert set(customers_on(held_page)) == control
    assert "please do not call these customers" in held_page
    one = sorted(control)[0]
    assert "Please do not call this customer." in (await client.get(f"/ui/customers/{one}")).text
    called = sorted(set(arms) - control)[0]
    assert "Please do not call" not in (await client.get(f"/ui/customers/{called}")).text

    # Re-evaluated a week on, and after the patterns are rebuilt: the same arms.
    await app.state.transactions.run(rebuild)
    await sweep_at(app, clock, OPENED + timedelta(days=7))
    again = await listed(client, keys, "/v1/alerts", arm="all")
    assert {a["customer_id"]: a["arm"] for a in again} == arms
    assert [a["id"] for a in again if a["status"] != "resolved"] != []


async def test_the_report_recovers_an_effect_planted_in_the_chain(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """Contact cases come back within the window with probability 0.55, control ones with
    0.25; whoever comes back spends 40 in one visit. The report counts exactly what was
    planted, and its interval holds the true 30 points (and not 0)."""
    alerts = await lapsed_chain(app, client, keys, clock, 240, 0.5)
    assert len(alerts) == 240
    rng = random.Random(7)
    returns, planted = [], {"contact": [0, 0], "control": [0, 0]}
    for alert in alerts:
        arm = alert["arm"]
        back = rng.random() < (0.55 if arm == "contact" else 0.25)
        planted[arm][0] += 1
        planted[arm][1] += back
        if back:
            day = (OPENED + timedelta(days=rng.randint(1, 55))).date()
            returns += visits(alert["customer_id"], [day], amount="40", tag="-back")
    # A purchase after the window does not count, nor does a case still in its window.
    returns += visits("c0000", [(OPENED + timedelta(days=61)).date()], tag="-late")
    clock.set(OPENED + timedelta(days=62))
    await post(client, keys, returns)

    params = {"from": "2026-04-01", "to": "2026-06-01"}
    answer = await client.get("/v1/reports/outreach-effect", params=params, headers=keys.read)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    overall = report["rows"][0]
    assert overall["dimension"] == "all"
    assert (overall["contact_cases"], overall["contact_returned"]) == tuple(planted["contact"])
    assert (overall["control_cases"], overall["control_returned"]) == tuple(planted["control"])
    assert overall["difference_low"] <= 0.30 <= overall["difference_high"]
    assert overall["difference_low"] > 0
    assert report["verdict"].startswith("Calling raises the return rate by")
    rate_1 = planted["contact"][1] / planted["contact"][0]
    rate_0 = planted["control"][1] / planted["control"][0]
    assert overall["difference"] == round(rate_1 - rate_0, 4)
    assert float(overall["contact_mean_spend"]) == pytest.approx(40 * rate_1, abs=0.006)
    assert float(overall["control_mean_spend"]) == pytest.approx(40 * rate_0, abs=0.006)
    assert overall["spend_difference_low"] is not None
    assert float(overall["spend_difference_low"]) > 0
    stores = {r["value"]: r for r in report["rows"] if r["dimension"] == "store"}
    assert set(stores) == {"north", "south"}
    assert sum(r["contact_cases"] + r["control_cases"] for r in stores.values()) == len(alerts)
    assert report["cases_so_far"] == len(alerts)
    assert report["holdout"] == 0.5
    assert "Newcombe" in report["method"]

    as_csv = await client.get(
        "/v1/reports/outreach-effect", params=params, headers={**keys.read, "Accept": "text/csv"}
    )
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(rows) == len(report["rows"])
    assert rows[0]["contact_returned"] == str(overall["contact_returned"])

    followed = (
        await client.get("/v1/reports/outreach-cases", params=params, headers=keys.read)
    ).json()["rows"]
    assert len(followed) == len(alerts)
    outcomes = {(r["arm"], r["outcome"]) for r in followed}
    assert outcomes == {(arm, o) for arm in planted for o in ("returned", "stayed_away")}
    came = [r for r in followed if r["outcome"] == "returned"]
    assert len(came) == planted["contact"][1] + planted["control"][1]
    assert all(1 <= r["days_to_return"] <= 56 and r["net_spend"] == "40" for r in came)
    first = next(r for r in followed if r["customer_id"] == "c0000")
    assert first["net_spend"] in ("0", "40")  # its purchase after the window is not in it

    # The manager's page says the same, and its CSV is the API's for the same span.
    await sign_in(client, keys)
    page = (await client.get("/ui/manager")).text
    assert report["verdict"] in page.replace("&#39;", "'")
    assert f"({overall['contact_returned']} of {overall['contact_cases']})" in page
    assert f"({overall['control_returned']} of {overall['control_cases']})" in page
    download = await client.get("/ui/manager/outreach-effect.csv")
    api_csv = await client.get(
        "/v1/reports/outreach-effect", headers={**keys.read, "Accept": "text/csv"}
    )
    assert download.status_code == 200
    assert download.text == api_csv.text
    assert page.count("Can we trust the scores?") == 1
    assert "<title>Manager · Defection Radar</title>" in page

    # Ten days earlier, every case was still inside its window: nothing counted yet.
    clock.set(OPENED + timedelta(days=50))
    early = (
        await client.get("/v1/reports/outreach-effect", params=params, headers=keys.read)
    ).json()
    assert early["rows"][0]["pending_cases"] == len(alerts)
    assert early["rows"][0]["contact_cases"] == 0
    assert early["verdict"].startswith("No case has been followed")


async def test_without_a_holdout_cases_are_outside_the_experiment(
    app: FastAPI, client: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapsed_chain(app, client, keys, clock, 3, 0.0)
    assert [a["arm"] for a in alerts] == [None, None, None]
    assert len(await listed(client, keys, "/v1/alerts")) == 3
    report = (await client.get("/v1/reports/outreach-effect", headers=keys.read)).json()
    assert report["verdict"].startswith("No control group")
    assert report["cases_needed"] is None


@pytest.mark.parametrize(
    ("path", "params", "pointer"),
    [
        ("/v1/alerts", {"arm": "treated"}, "/query/arm"),
        ("/v1/cases", {"arm": ""}, "/query/arm"),
        ("/v1/alerts/changes", {"arm": "control,contact"}, "/query/arm"),
        ("/v1/reports/outreach-effect", {"from": "2026-05-01", "to": "2026-04-01"}, "/query/from"),
        ("/v1/reports/outreach-effect", {"from": "2020-01-01", "to": "2026-04-01"}, "/query/from"),
        ("/v1/reports/outreach-effect", {"from": "2026-13-01"}, "/query/from"),
    ],
)
async def test_bad_arms_and_spans_are_refused_by_field(
    client: httpx.AsyncClient, keys: Keys, path: str, params: dict[str, str], pointer: str
) -> None:
    answer = await client.get(path, params=params, headers=keys.read)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert pointer in [error["pointer"] for error in answer.json()["errors"]]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"holdout": 0.6}, "/holdout"),
        ({"holdout": -0.1}, "/holdout"),
        ({"holdout": "0.1"}, "/holdout"),
        ({"outreach": {"window_days": 3}}, "/outreach/window_days"),
        ({"outreach": {"minimum_effect": 0}}, "/outreach/minimum_effect"),
    ],
)
async def test_bad_holdouts_are_refused_by_field(
    client: httpx.AsyncClient, keys: Keys, body: dict[str, Any], pointer: str
) -> None:
    answer = await client.put("/v1/policy", json=body, headers=keys.manage)
    assert answer.status_code == 422, answer.text
    assert pointer in [error["pointer"] for error in answer.json()["errors"]]
    current = (await client.get("/v1/policy", headers=keys.manage)).json()
    assert current["version"] == 0  # nothing stored


async def test_an_endpoint_with_an_unknown_arm_is_refused(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    body = {"url": "http://127.0.0.1:9/hook", "filters": {"arms": ["treated"]}}
    answer = await client.post("/v1/webhooks/endpoints", json=body, headers=keys.manage)
    assert answer.status_code == 422, answer.text
    assert any(e["pointer"].startswith("/filters/arms") for e in answer.json()["errors"])
