"""Hostile input to the page (/ui/...): odd numbers, dates, text, paths, cookies, forms and
redirect targets. Each answer is a precise 4xx (or the input ignored when it is a filter),
never a 500, never a half-written state, never stored text run as markup, never a redirect
away from the page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.alerts import workflow
from app.alerts.service import sweep
from app.kit.errors import Conflict
from app.models import Alert, AlertEvent
from tests.conftest import Clock, Keys, ScoredTransport
from tests.test_alerts import post, visits, weekly
from tests.test_alerts_api import lapse

pytestmark = pytest.mark.anyio

MARKUP = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
WORK = "/ui/cases/{}/{}"


@pytest.fixture
async def page(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, a 500 answered as a 500 (not raised into the test)."""
    transport = ScoredTransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as http:
        yield http


async def sign_in(
    http: httpx.AsyncClient, keys: Keys, person: str = "Ola", store: str = ""
) -> httpx.Response:
    return await http.post(
        "/ui/login", data={"key": keys.raw["read"], "person": person, "store": store}
    )


async def signed_in(http: httpx.AsyncClient, keys: Keys, person: str = "Ola") -> None:
    answer = await sign_in(http, keys, person)
    assert (answer.status_code, answer.headers["location"]) == (303, "/ui/"), answer.text


async def lapse_more(http: httpx.AsyncClient, keys: Keys, *names: str) -> None:
    """Open an inactivity alert for more customers (after `lapse` set the clock)."""
    for name in names:
        await post(http, keys, visits(name, weekly(date(2026, 1, 5), 12), amount="50"))


async def alert_of(http: httpx.AsyncClient, keys: Keys, alert_id: int) -> dict[str, Any]:
    answer = await http.get(f"/v1/alerts/{alert_id}", headers=keys.read)
    assert answer.status_code == 200, answer.text
    detail: dict[str, Any] = answer.json()
    return detail


def assert_no_markup(html: str) -> None:
    for raw in ("<script>alert", "<img src=x", "onerror=alert(2)>"):
        assert raw not in html


# ---- sign-in: names, stores, keys, cookies ----------------------------------------------


@pytest.mark.parametrize(
    ("person", "store"),
    [("\u0141ukasz \u017b\u00f3\u0142\u0107", "\u0141\u00f3d\u017a"), ("\u674e\u96f7", "")],
)
async def test_a_name_or_store_beyond_latin1_signs_in(
    page: httpx.AsyncClient, keys: Keys, person: str, store: str
) -> None:
    answer = await sign_in(page, keys, person, store)
    assert (answer.status_code, answer.headers.get("location")) == (303, "/ui/"), answer.text
    listed = await page.get("/ui/")
    assert listed.status_code == 200
    assert person in listed.text


async def test_markup_in_name_store_and_filters_is_shown_as_text(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapse(page, keys, clock)
    answer = await sign_in(page, keys, MARKUP[:100], MARKUP)
    assert answer.status_code == 303
    assigned = await page.post(WORK.format("mid", "assign"), data={"to": MARKUP[:100]})
    assert assigned.status_code == 200
    assert_no_markup(assigned.text)
    noted = await page.post(WORK.format("mid", "note"), data={"note": MARKUP})
    assert noted.status_code == 200
    for path, params in [
        ("/ui/", {}),
        ("/ui/", {"mine": "1"}),
        ("/ui/", {"q": MARKUP[:128], "assignee": MARKUP[:100]}),
        ("/ui/customers/mid", {}),
        ("/ui/customers/" + MARKUP, {}),
        ("/ui/manager", {}),
        ("/ui/login", {"error": MARKUP, "next": "/ui/" + MARKUP}),
    ]:
        shown = await page.get(path, params=params)
        assert shown.status_code in (200, 404), (path, shown.status_code)
        assert_no_markup(shown.text)
    assert "&lt;script&gt;" in (await page.get("/ui/customers/mid")).text


async def test_markup_in_a_customer_id_is_shown_as_text(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapse(page, keys, clock)
    await lapse_more(page, keys, MARKUP)
    await signed_in(page, keys)
    listed = await page.get("/ui/")
    assert listed.status_code == 200
    assert_no_markup(listed.text)
    acknowledged = await page.post(WORK.format(MARKUP.replace("/", "%2F"), "acknowledge"))
    assert acknowledged.status_code == 200, acknowledged.text
    assert_no_markup(acknowledged.text)


async def test_a_nul_in_the_name_is_never_stored_nor_a_500(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapse(page, keys, clock)
    answer = await sign_in(page, keys, "O\x00la")
    assert answer.status_code in (303, 422), answer.text
    if answer.status_code == 422:
        return  # refused: fine
    acknowledged = await page.post(WORK.format("big", "acknowledge"))
    assert acknowledged.status_code == 200, acknowledged.text
    alert = (await alert_of(page, keys, alerts["big"]["id"]))["alert"]
    assert "\x00" not in alert["acknowledged_by"]


async def test_a_forged_name_cookie_of_any_length_is_bounded(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapse(page, keys, clock)
    await signed_in(page, keys)
    page.cookies.set("radar_name", "x" * 10_000)
    acknowledged = await page.post(WORK.format("big", "acknowledge"))
    assert acknowledged.status_code in (200, 422), acknowledged.text
    alert = (await alert_of(page, keys, alerts["big"]["id"]))["alert"]
    if acknowledged.status_code == 200:
        assert 0 < len(alert["acknowledged_by"]) <= 100
    else:
        assert alert["status"] == "open"


@pytest.mark.parametrize("store", ["x" * 10_000, '"a\\000b"'])
async def test_a_forged_store_cookie_is_a_filter_ignored_or_matching_nothing(
    page: httpx.AsyncClient, keys: Keys, clock: Clock, store: str
) -> None:
    await lapse(page, keys, clock)
    await signed_in(page, keys)
    page.cookies.set("radar_store", store)
    listed = await page.get("/ui/", params={"mine": "1"})
    assert listed.status_code == 200, listed.text


@pytest.mark.parametrize(
    "key",
    ["garbage", "rk_" + "a" * 150, '"rk_\\000\\001"', '"\\303\\251\\303\\251"'],
)
async def test_a_garbage_key_cookie_leads_to_the_sign_in_form(
    page: httpx.AsyncClient, key: str
) -> None:
    page.cookies.set("radar_key", key)
    listed = await page.get("/ui/")
    assert listed.status_code == 303
    assert listed.headers["location"].startswith("/ui/login?")
    htmx = await page.get("/ui/", headers={"HX-Request": "true"})
    assert (htmx.status_code, htmx.headers["hx-redirect"][:10]) == (204, "/ui/login?")
    changes = await page.get("/ui/changes", params={"wait": 0})
    assert (changes.status_code, changes.json()) == (401, {"signed_out": True})
    acted = await page.post(WORK.format("big", "acknowledge"))
    assert acted.status_code == 303
    assert acted.headers["location"].startswith("/ui/login?")


@pytest.mark.parametrize("key", ["rk_\x00\x01", "x\u0000y", "\u00e9" * 10])
async def test_a_garbage_key_typed_in_the_form_is_refused(
    page: httpx.AsyncClient, key: str
) -> None:
    answer = await page.post("/ui/login", data={"key": key})
    assert answer.status_code == 401, answer.text
    assert "unknown or revoked" in answer.text


async def test_a_revoked_key_signs_the_person_out(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapse(page, keys, clock)
    await signed_in(page, keys)
    assert (await page.get("/ui/")).status_code == 200
    listed = await page.get("/v1/keys", headers=keys.manage)
    ops = next(key for key in listed.json()["items"] if key["name"] == "ops")
    revoked = await page.delete(f"/v1/keys/{ops['id']}", headers=keys.manage)
    assert revoked.status_code in (200, 204), revoked.text
    after = await page.get("/ui/")
    assert after.status_code == 303
    assert after.headers["location"].startswith("/ui/login?")
    assert (await page.get("/ui/changes", params={"wait": 0})).status_code == 401
    acted = await page.post(WORK.format("big", "acknowledge"), headers={"HX-Request": "true"})
    assert acted.status_code == 204
    assert acted.headers["hx-redirect"].startswith("/ui/login?")


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "https://evil.example/ui/",
        "/ui/../x",
        "/ui/..%2f..%2fx",
        "/ui//evil.example",
        "/ui/\\..\\..\\x",
        "/ui/\r\nSet-Cookie: a=b",
        "\t//evil.example",
        "",
    ],
)
async def test_next_never_leads_away_from_the_page(
    page: httpx.AsyncClient, keys: Keys, target: str
) -> None:
    answer = await page.post(
        "/ui/login", data={"key": keys.raw["read"], "person": "Ola", "next": target}
    )
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert "\r" not in location
    assert "\n" not in location
    # As a browser reads it: a backslash is a slash, dot segments are resolved.
    resolved = urlsplit(urljoin("http://radar.test/ui/login", location.replace("\\", "/")))
    assert (resolved.scheme, resolved.netloc) == ("http", "radar.test"), location
    assert resolved.path.startswith("/ui/"), location
    form = await page.get("/ui/login", params={"next": target})
    assert form.status_code == 200
    assert 'name="next" value="/ui/' in form.text


# ---- the call list and the refresh --------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"page": "0"},
        {"page": "-1"},
        {"page": "abc"},
        {"page": "1.5"},
        {"page": str(2**64)},
        {"page": "1e3"},
    ],
)
async def test_a_bad_page_number_is_a_4xx_naming_it(
    page: httpx.AsyncClient, keys: Keys, params: dict[str, str]
) -> None:
    await signed_in(page, keys)
    listed = await page.get("/ui/", params=params)
    assert listed.status_code == 422, listed.text
    assert "page" in listed.text


@pytest.mark.parametrize("number", ["2", "99999", "100000"])
async def test_a_page_beyond_the_end_leads_to_the_last(
    page: httpx.AsyncClient, keys: Keys, clock: Clock, number: str
) -> None:
    await lapse(page, keys, clock)
    await signed_in(page, keys)
    listed = await page.get("/ui/", params={"page": number, "q": "b"})
    assert listed.status_code == 303
    assert "page=1" in listed.headers["location"]
    assert (await page.get(listed.headers["location"])).status_code == 200
    empty = await page.get("/ui/", params={"page": number, "q": "nobody-at-all"})
    assert empty.status_code == 303
    assert (await page.get(empty.headers["location"])).status_code == 200


ODD_FILTERS: list[dict[str, Any]] = [
    {"assignee": "a\x00b"},
    {"assignee": "\x01\x1f\x7f"},
    {"q": "a\x00b"},
    {"q": "\u202e\ufeff\U0001f600"},
    {"store": ["a\x00b", "x" * 10_000, ""]},
    {"rule": ["inactivity"] * 3 + ["\x00"]},
    {"status": ["open", "resolved", "\x00"]},
    {"severity": ["HIGH", "high\x00"]},
    {"sort": "\x00"},
    {"sort": "value_at_risk"},
    {"mine": "yes please"},
    {"unknown": "1"},
]


async def test_odd_filters_are_ignored_or_match_nothing(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapse(page, keys, clock)
    await signed_in(page, keys)
    for params in ODD_FILTERS:
        listed = await page.get("/ui/", params=params)
        assert listed.status_code == 200, (params, listed.text[:300])
        assert "text/html" in listed.headers["content-type"], params


@pytest.mark.parametrize(
    "params",
    [
        {"after": "-1"},
        {"after": str(2**63)},
        {"after": "x"},
        {"wait": "-1"},
        {"wait": "1e9"},
        {"wait": "nan"},
        {"wait": "inf"},
        {"wait": "-inf"},
    ],
)
async def test_bad_refresh_numbers_are_a_422_at_once(
    page: httpx.AsyncClient, keys: Keys, params: dict[str, str]
) -> None:
    await signed_in(page, keys)
    answer = await asyncio.wait_for(page.get("/ui/changes", params=params), timeout=5)
    assert answer.status_code == 422, answer.text


async def test_the_refresh_answers_json_signed_in_or_not(
    page: httpx.AsyncClient, keys: Keys
) -> None:
    signed_out = await page.get("/ui/changes", params={"after": 0, "wait": 0})
    assert (signed_out.status_code, signed_out.json()) == (401, {"signed_out": True})
    htmx = await page.get("/ui/changes", headers={"HX-Request": "true"}, params={"wait": 0})
    assert htmx.status_code == 401
    await signed_in(page, keys)
    answer = await page.get("/ui/changes", params={"after": 2**62, "wait": 0})
    assert answer.status_code == 200
    assert answer.json() == {"latest": 0, "changed": False}


# ---- working a case -----------------------------------------------------------------------


BAD_ACTIONS: list[tuple[str, dict[str, str], str]] = [
    ("snooze", {"until": "2026-13-40"}, "until"),
    ("snooze", {"until": ""}, "until"),
    ("snooze", {"until": "0001-01-01"}, "future"),
    ("snooze", {"until": "9999-12-31"}, "9000"),
    ("snooze", {"until": "2026-05-10; DROP TABLE alerts"}, "until"),
    ("snooze", {"until": "\x00" * 10}, "until"),
    ("assign", {"to": "x" * 101}, "100"),
    ("assign", {"to": "J\x00on"}, "to"),
    ("note", {"note": "x" * 2001}, "2000"),
    ("note", {"note": "   "}, "note"),
    ("resolve", {"outcome": "lost"}, "reason"),
    ("resolve", {"outcome": "lost", "reason": "price\x00"}, "reason"),
    ("resolve", {"outcome": "not_a_defection", "note": "x" * 2001}, "2000"),
    ("resolve", {"outcome": "won_back\x00", "reason": "price"}, "outcome"),
    ("resolve", {"outcome": "not_a_defection", "channel": "pigeon"}, "channel"),
    ("frobnicate", {}, "frobnicate"),
]


async def test_bad_case_actions_are_a_precise_422_and_change_nothing(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """Each bad form, one after the other on the same case (one set-up for all of them)."""
    alerts = await lapse(page, keys, clock)
    await signed_in(page, keys)
    before = await alert_of(page, keys, alerts["big"]["id"])
    for action, form, word in BAD_ACTIONS:
        case = f"{action} {form!r:.80}"
        answer = await page.post(WORK.format("big", action), data=form)
        assert answer.status_code == 422, (case, answer.status_code, answer.text)
        assert word in answer.text, case
        assert "hx-trigger" not in answer.headers, case
        assert await alert_of(page, keys, alerts["big"]["id"]) == before, case


@pytest.mark.parametrize("until", ["8999-12-31", "9999-12-31"])
async def test_a_far_snooze_is_refused_or_breaks_no_view(
    app: FastAPI, page: httpx.AsyncClient, keys: Keys, clock: Clock, until: str
) -> None:
    """A snooze the API would take (before 9000) leaves every view and the sweep working."""
    alerts = await lapse(page, keys, clock)
    await signed_in(page, keys)
    snoozed = await page.post(WORK.format("big", "snooze"), data={"until": until})
    assert snoozed.status_code in (200, 422), snoozed.text
    if snoozed.status_code == 422:
        return
    await sweep(app.state.transactions, app.state.evaluator, clock)
    await post(page, keys, visits("big", [date(2026, 4, 30)], amount="900", tag="-back"))
    for path, params in [
        ("/ui/", {"status": "snoozed"}),
        ("/ui/customers/big", {}),
        ("/ui/manager", {}),
        (f"/v1/alerts/{alerts['big']['id']}", {}),
        ("/v1/customers/big", {}),
    ]:
        shown = await page.get(path, params=params, headers=keys.read)
        assert shown.status_code == 200, (path, shown.text)


async def test_odd_customer_ids_in_an_action_are_a_4xx(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapse(page, keys, clock)
    await signed_in(page, keys)
    form = {"note": "hi", "outcome": "not_a_defection"}
    for customer in ["a%00b", "x" * 10_000, "%01", "%00", "\U0001f600"]:
        for action in ["acknowledge", "note", "resolve"]:
            answer = await page.post(WORK.format(customer, action), data=form)
            case = (customer[:20], action, answer.status_code, answer.text[:300])
            assert answer.status_code in (404, 422), case
            assert "hx-trigger" not in answer.headers, case


@pytest.mark.parametrize("customer", ["a%00b", "x" * 10_000, "%01", "%2e%2e"])
async def test_odd_customer_ids_in_the_customer_view_are_a_404(
    page: httpx.AsyncClient, keys: Keys, customer: str
) -> None:
    await signed_in(page, keys)
    shown = await page.get("/ui/customers/" + customer)
    assert shown.status_code == 404, shown.text[:300]
    assert len(shown.text) < 5_000


async def test_a_customer_id_with_a_slash_is_viewed_and_worked(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapse(page, keys, clock)
    await lapse_more(page, keys, "north/7", "a b?c#d")
    await signed_in(page, keys)
    listed = await page.get("/ui/")
    assert 'href="/ui/customers/north/7"' in listed.text or "north%2F7" in listed.text
    for raw in ("north/7", "north%2F7"):
        assert (await page.get(f"/ui/customers/{raw}")).status_code == 200
    noted = await page.post("/ui/cases/north%2F7/note", data={"note": "hi"})
    assert (noted.status_code, noted.headers.get("hx-trigger")) == (200, "radar:changed")
    odd = await page.post("/ui/cases/a%20b%3Fc%23d/acknowledge")
    assert (odd.status_code, odd.headers.get("hx-trigger")) == (200, "radar:changed")


async def test_an_action_on_a_customer_without_alerts_is_a_4xx(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapse(page, keys, clock)
    await signed_in(page, keys)
    nobody = await page.post(WORK.format("nobody", "acknowledge"))
    assert nobody.status_code == 404, (nobody.status_code, nobody.text)
    resolved = await page.post(WORK.format("big", "resolve"), data={"outcome": "not_a_defection"})
    assert resolved.status_code == 200
    for action, form in [
        ("acknowledge", {}),
        ("note", {"note": "again"}),
        ("resolve", {"outcome": "not_a_defection"}),
    ]:
        again = await page.post(WORK.format("big", action), data=form)
        assert again.status_code == 409, (action, again.status_code, again.text)
        assert "nothing left" in again.text


async def test_forms_in_any_encoding_and_repeated_fields(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapse(page, keys, clock)
    await signed_in(page, keys)
    multipart = await page.post(WORK.format("big", "note"), files={"note": (None, "by multipart")})
    assert multipart.status_code == 200, multipart.text
    upload = await page.post(
        WORK.format("big", "note"), files={"note": ("n.txt", b"a file", "text/plain")}
    )
    assert upload.status_code == 422, upload.text
    repeated = await page.post(
        WORK.format("big", "note"),
        content=b"note=first&note=second",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert repeated.status_code == 200
    note = (await alert_of(page, keys, alerts["big"]["id"]))["alert"]["note"]
    assert note in ("first", "second")
    for content_type, body in [
        ("multipart/form-data", b"--x\r\nnote"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\n"),
        ("application/json", b'{"note": "json"}'),
        ("text/plain", b"\xff\xfe\x00"),
    ]:
        odd = await page.post(
            WORK.format("big", "note"), content=body, headers={"Content-Type": content_type}
        )
        assert 400 <= odd.status_code < 500, (content_type, odd.status_code, odd.text[:200])


async def test_cross_site_posts_are_refused(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    alerts = await lapse(page, keys, clock)
    await signed_in(page, keys)
    for headers in [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ]:
        refused = await page.post(WORK.format("big", "acknowledge"), headers=headers)
        assert refused.status_code == 403, headers
        login = await page.post("/ui/login", data={"key": keys.raw["read"]}, headers=headers)
        assert login.status_code == 403
    assert (await alert_of(page, keys, alerts["big"]["id"]))["alert"]["status"] == "open"


async def test_a_failure_on_one_alert_leaves_the_customers_other_alerts_untouched(
    app: FastAPI,
    page: httpx.AsyncClient,
    keys: Keys,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alerts = await lapse(page, keys, clock)
    async with app.state.sessionmaker.begin() as session:
        first = await session.get(Alert, alerts["big"]["id"])
        assert first is not None
        columns = {c.name: getattr(first, c.name) for c in Alert.__table__.columns}
        del columns["id"]
        session.add(Alert(**{**columns, "rule": "frequency_drop", "value_at_risk": Decimal(1)}))
    await signed_in(page, keys)
    real = workflow.apply
    calls: list[int] = []

    def second_fails(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        if len(calls) == 2:
            raise Conflict("Changed meanwhile.")
        return real(*args, **kwargs)

    monkeypatch.setattr(workflow, "apply", second_fails)
    answer = await page.post(WORK.format("big", "resolve"), data={"outcome": "not_a_defection"})
    assert answer.status_code == 409
    assert len(calls) == 2
    async with app.state.sessionmaker() as session:
        statuses = (
            await session.scalars(select(Alert.status).where(Alert.customer_id == "big"))
        ).all()
        events = (
            await session.scalars(select(AlertEvent.type).where(AlertEvent.customer_id == "big"))
        ).all()
    assert sorted(statuses) == ["open", "open"]
    assert "alert.resolved" not in events


# ---- the manager's exports ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["..%2Freasons", "reasons%00", "REASONS", "x" * 5000, "%3Cscript%3E", "reasons.csv"]
)
async def test_unknown_exports_are_a_plain_404(
    page: httpx.AsyncClient, keys: Keys, name: str
) -> None:
    await signed_in(page, keys)
    answer = await page.get(f"/ui/manager/{name}.csv")
    assert answer.status_code == 404, answer.text[:200]
    assert "<script>" not in answer.text


async def test_exports_need_a_sign_in_and_name_their_file(
    page: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapse(page, keys, clock)
    assert (await page.get("/ui/manager/reasons.csv")).status_code == 303
    await signed_in(page, keys)
    for name in ("defection-rate-by-staff", "value-at-risk"):
        answer = await page.get(f"/ui/manager/{name}.csv")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/csv")
        assert answer.headers["content-disposition"] == (
            f'attachment; filename="{name}-{clock().date()}.csv"'
        )


async def test_login_form_fields_beyond_their_bounds_are_a_4xx(
    page: httpx.AsyncClient, keys: Keys
) -> None:
    for data in [
        {"key": keys.raw["read"], "person": "x" * 101},
        {"key": keys.raw["read"], "store": "x" * 129},
        {"key": "k" * 201},
        {"key": keys.raw["read"], "next": "/ui/" + "x" * 2000},
        {},
    ]:
        answer = await page.post("/ui/login", data=data)
        assert 400 <= answer.status_code < 500, (data.keys(), answer.status_code)
    assert (await page.get("/ui/login", params={"error": "x" * 301})).status_code == 422
