"""Hostile input to the outreach, model-quality and defector reports, the plans, the
policy's holdout, outreach, playbooks and model_quality, the `arm` filters, the webhook
endpoints' `arms`, and the page's control group and new exports. Each answer is a precise
4xx naming the field (a JSON pointer), never a 500, never a half-written state, never a
number without bound, and never a CSV cell a spreadsheet would run as a formula."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
from collections.abc import AsyncIterator
from datetime import date
from html import escape
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from tests.conftest import Clock, Keys, ScoredTransport, event
from tests.test_alerts import post, weekly
from tests.test_page_hostile import signed_in
from tests.test_plans import worked

pytestmark = pytest.mark.anyio

REPORTS = (
    "/v1/reports/outreach-effect",
    "/v1/reports/outreach-cases",
    "/v1/reports/model-quality",
    "/v1/reports/defector-profiles",
)
PROBLEM = "application/problem+json"
# The largest integer every JSON reader holds exactly (a JavaScript number).
MAX_SAFE_INTEGER = 2**53 - 1
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, a 500 answered as a 500 (not raised into the test)."""
    transport = ScoredTransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as http:
        yield http


def assert_problem(answer: httpx.Response, status: int, pointers: list[str], case: object) -> None:
    """A problem document of `status` naming exactly `pointers` (in any order)."""
    assert answer.status_code == status, (case, answer.status_code, answer.text[:400])
    assert answer.headers["content-type"].startswith(PROBLEM), case
    named = sorted(error["pointer"] for error in answer.json().get("errors") or [])
    assert named == sorted(pointers), (case, named)


async def policy_version(api: httpx.AsyncClient, keys: Keys) -> int:
    answer = await api.get("/v1/policy", headers=keys.manage)
    assert answer.status_code == 200, answer.text[:400]
    version: int = answer.json()["version"]
    return version


async def put_policy(api: httpx.AsyncClient, keys: Keys, body: str) -> httpx.Response:
    """PUT a raw body (Python's JSON reader also takes NaN, Infinity and lone surrogates)."""
    headers = {**keys.manage, "Content-Type": "application/json"}
    return await api.put(
        "/v1/policy", content=body.encode("utf-8", "surrogatepass"), headers=headers
    )


def cursor(value: Any) -> str:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def assert_no_formula(text: str, case: object) -> None:
    for row in csv.reader(io.StringIO(text)):
        for cell in row:
            runs = cell.startswith(FORMULA_STARTS) and not is_number(cell)
            assert not runs, (case, cell)


# ---- the reports' spans ------------------------------------------------------------------

BAD_SPANS: list[tuple[dict[str, Any], str]] = [
    ({"from": "0001-01-01"}, "/query/from"),
    ({"to": "9999-12-31"}, "/query/to"),
    ({"from": "2026-02-30"}, "/query/from"),
    ({"to": "2026-13-01"}, "/query/to"),
    ({"from": "1969-12-31", "to": "1970-01-02"}, "/query/from"),
    ({"from": "9000-01-01"}, "/query/from"),
    ({"from": "2026-03-01", "to": "2026-03-01"}, "/query/from"),  # empty
    ({"from": "2026-03-02", "to": "2026-03-01"}, "/query/from"),  # reversed
    ({"from": "1970-01-01", "to": "8999-12-31"}, "/query/from"),  # huge
    ({"from": "2026-01-01\x00"}, "/query/from"),
    ({"from": "\x00"}, "/query/from"),
    ({"to": "2026-01-01\x1f"}, "/query/to"),
    ({"from": "x" * 5000}, "/query/from"),
    ({"from": "\u0662\u0660\u0662\u0666-01-01"}, "/query/from"),  # Arabic-Indic digits
    ({"from": "1e3"}, "/query/from"),
    ({"from": "1767225600"}, "/query/from"),  # a Unix time is not a date here
    ({"from": "NaN"}, "/query/from"),
    ({"to": "Infinity"}, "/query/to"),
    ({"from": ""}, "/query/from"),
    ({"from": "+2026-01-01"}, "/query/from"),
    ({"from": "-2026-01-01"}, "/query/from"),
    ({"to": "2026-01-01; DROP TABLE alerts"}, "/query/to"),
    ({"form": "2026-01-01"}, "/query/form"),
    ({"from\x00": "2026-01-01"}, "/query/from\x00"),
]


async def test_bad_report_spans_are_a_422_naming_the_field(
    api: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    clock.set("2026-05-20T09:00:00+00:00")
    for path in REPORTS:
        for params, pointer in BAD_SPANS:
            case = (path, str(params)[:60])
            for accept in ("application/json", "text/csv"):
                answer = await api.get(path, params=params, headers={**keys.read, "Accept": accept})
                assert_problem(answer, 422, [pointer], (case, accept))


EDGE_SPANS: list[dict[str, str]] = [
    {"from": "1970-01-01", "to": "1970-01-02"},
    {"to": "1970-01-01"},  # the default start falls before 1970
    {"from": "8999-01-01", "to": "8999-12-31"},
    {"to": "8999-12-31"},
    {"from": "2024-02-29", "to": "2024-03-01"},
    {"from": "2026-05-19", "to": "2026-05-20"},
]


async def test_spans_at_the_edges_answer_json_and_csv(
    api: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    """(The data of test_formula_ids_reach_every_csv_neutralised: something to count.)"""
    await lapsed_with_formula_ids(api, keys, clock)
    for path in REPORTS:
        for params in EDGE_SPANS:
            case = (path, params)
            as_json = await api.get(path, params=params, headers=keys.read)
            assert as_json.status_code == 200, (case, as_json.text[:400])
            assert as_json.headers["content-type"] == "application/json", case
            as_csv = await api.get(path, params=params, headers={**keys.read, "Accept": "text/csv"})
            assert as_csv.status_code == 200, (case, as_csv.text[:400])
            assert as_csv.headers["content-type"] == "text/csv; charset=utf-8", case
            assert as_csv.text.count("\r\n") >= 1, case


# ---- content negotiation -----------------------------------------------------------------

CSV_ACCEPTS = [
    "text/csv",
    "text/csv; charset=utf-8",
    "text/csv, application/json",
    "application/json;q=0.5, text/csv",
]
JSON_ACCEPTS = ["", "application/json", "*/*", "application/*", "application/problem+json"]


async def test_every_report_answers_csv_or_json_as_accepted(
    api: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    clock.set("2026-05-20T09:00:00+00:00")
    for path in REPORTS:
        for accept in CSV_ACCEPTS:
            answer = await api.get(path, headers={**keys.read, "Accept": accept})
            assert answer.status_code == 200, (path, accept, answer.text[:300])
            assert answer.headers["content-type"] == "text/csv; charset=utf-8", (path, accept)
        for accept in JSON_ACCEPTS:
            answer = await api.get(path, headers={**keys.read, "Accept": accept})
            assert answer.status_code == 200, (path, accept, answer.text[:300])
            assert answer.headers["content-type"] == "application/json", (path, accept)
            assert isinstance(answer.json(), dict), (path, accept)


async def test_accept_is_read_as_media_types_case_and_quality_included(
    api: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    clock.set("2026-05-20T09:00:00+00:00")
    for path in REPORTS:
        upper = await api.get(path, headers={**keys.read, "Accept": "TEXT/CSV"})
        assert upper.headers["content-type"] == "text/csv; charset=utf-8", path
        refused = await api.get(
            path, headers={**keys.read, "Accept": "text/csv;q=0, application/json"}
        )
        assert refused.headers["content-type"] == "application/json", path


# ---- formulas in client text reaching the CSVs -------------------------------------------

STORES = ['=HYPERLINK("http://evil.example","x")', "+1+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3"]
CUSTOMERS = ["=1+1", "+2", "@x", "-cmd"]
CATEGORY = '=IMPORTXML("http://evil.example","//a")'


async def lapsed_with_formula_ids(api: httpx.AsyncClient, keys: Keys, clock: Clock) -> None:
    """Weekly customers with formula ids in formula stores, lapsed with a holdout of 0.5
    and a 7-day window; one resolved lost; the clock then past every window."""
    body = '{"holdout": 0.5, "outreach": {"window_days": 7}}'
    assert (await put_policy(api, keys, body)).status_code == 200
    clock.set("2026-05-01T09:00:00+00:00")
    events = []
    for n, (customer, store) in enumerate(zip(CUSTOMERS * 2, STORES * 2, strict=True)):
        name = f"{customer}{n}"
        for day in weekly(date(2026, 1, 5), 12):
            events.append(
                event(
                    f"{name}-{day}",
                    customer_id=name,
                    store_id=store,
                    occurred_at=f"{day}T12:00:00Z",
                    amount=str(40 + n),
                    items=[{"category": CATEGORY, "amount": "1"}],
                    attributes={"segment": "=SEGMENT()"},
                )
            )
    await post(api, keys, events)
    listed = await api.get("/v1/alerts", params={"arm": "all", "limit": 200}, headers=keys.read)
    alerts = listed.json()["items"]
    assert len(alerts) == len(events) // 12, listed.text[:400]
    resolved = await api.post(
        f"/v1/alerts/{alerts[0]['id']}/resolve",
        json={"outcome": "lost", "reason": "price"},
        headers=keys.read,
    )
    assert resolved.status_code == 200, resolved.text
    clock.set("2026-05-20T09:00:00+00:00")


async def test_formula_ids_reach_every_csv_neutralised(
    api: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapsed_with_formula_ids(api, keys, clock)
    csv_accept = {**keys.read, "Accept": "text/csv"}
    bodies: dict[str, str] = {}
    for path in REPORTS:
        answer = await api.get(path, headers=csv_accept)
        assert answer.status_code == 200, (path, answer.text[:300])
        assert_no_formula(answer.text, path)
        bodies[path] = answer.text
    effect = csv_rows(bodies["/v1/reports/outreach-effect"])
    stores = {row["value"] for row in effect if row["dimension"] == "store"}
    assert stores == {"'" + store for store in STORES}
    cases = csv_rows(bodies["/v1/reports/outreach-cases"])
    assert {row["store_id"] for row in cases} == {"'" + store for store in STORES}
    assert all(row["customer_id"].startswith("'") for row in cases)
    profiles = csv_rows(bodies["/v1/reports/defector-profiles"])
    values = {(row["dimension"], row["value"]) for row in profiles}
    assert ("category", "'" + CATEGORY) in values
    assert any(dimension == "home_store" and value[:1] == "'" for dimension, value in values)
    # JSON carries every value as it is.
    raw = (await api.get("/v1/reports/outreach-cases", headers=keys.read)).json()["rows"]
    assert {row["store_id"] for row in raw} == set(STORES)
    # The page's downloads are the same bytes.
    await signed_in(api, keys)
    for name in ("outreach-effect", "model-quality"):
        download = await api.get(f"/ui/manager/{name}.csv")
        assert download.status_code == 200, (name, download.text[:300])
        assert download.headers["content-type"] == "text/csv; charset=utf-8"
        assert download.headers["content-disposition"] == (
            f'attachment; filename="{name}-2026-05-20.csv"'
        )
        assert_no_formula(download.text, name)
    page_effect = await api.get("/ui/manager/outreach-effect.csv")
    assert page_effect.text == bodies["/v1/reports/outreach-effect"]
    for name in (
        "Outreach-Effect",
        "outreach-effect.csv",
        "model-quality%00",
        "model-quality%20",
        "..%2Fmodel-quality",
        "outreach-effect%0d%0aX-Injected:1",
    ):
        unknown = await api.get(f"/ui/manager/{name}.csv")
        assert unknown.status_code == 404, (name, unknown.status_code)
        assert "x-injected" not in unknown.headers


async def test_the_control_group_page_takes_odd_groups_as_the_call_list(
    api: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapsed_with_formula_ids(api, keys, clock)
    control = await api.get("/v1/cases", params={"arm": "control", "limit": 200}, headers=keys.read)
    contact = await api.get("/v1/cases", params={"arm": "contact", "limit": 200}, headers=keys.read)
    held = {case["customer_id"] for case in control.json()["items"]}
    called = {case["customer_id"] for case in contact.json()["items"]}
    assert held
    assert called
    await signed_in(api, keys)

    def on(page: str) -> set[str]:
        return {name for name in held | called if f'data-customer="{escape(name)}"' in page}

    shown = await api.get("/ui/", params={"group": "control"})
    assert shown.status_code == 200
    assert on(shown.text) == held
    for group in ["", "contact", "all", "CONTROL", " control", "control\x00", "\x00", "x" * 32]:
        listed = await api.get("/ui/", params={"group": group})
        assert listed.status_code == 200, (group, listed.text[:300])
        assert on(listed.text) == called, group
    too_long = await api.get("/ui/", params={"group": "x" * 33})
    assert too_long.status_code == 422, too_long.text[:300]


# ---- the policy: holdout, outreach, model_quality, playbooks -----------------------------


def play(**fields: Any) -> str:
    playbook = {"action": "Call", "owner": "store", "follow_up_days": 7, **fields}
    return orjson.dumps({"playbooks": {"price": playbook}}).decode()


BAD_POLICIES: list[tuple[str, list[str]]] = [
    ('{"holdout": 0.5000001}', ["/holdout"]),
    ('{"holdout": -1e-9}', ["/holdout"]),
    ('{"holdout": NaN}', ["/holdout"]),
    ('{"holdout": Infinity}', ["/holdout"]),
    ('{"holdout": -Infinity}', ["/holdout"]),
    ('{"holdout": 1e308}', ["/holdout"]),
    ('{"holdout": 1e400}', ["/holdout"]),
    ('{"holdout": true}', ["/holdout"]),
    ('{"holdout": "0.1"}', ["/holdout"]),
    ('{"holdout": null}', ["/holdout"]),
    ('{"holdout": [0.1]}', ["/holdout"]),
    ('{"holdout": {}}', ["/holdout"]),
    ('{"outreach": {"window_days": 6}}', ["/outreach/window_days"]),
    ('{"outreach": {"window_days": 366}}', ["/outreach/window_days"]),
    ('{"outreach": {"window_days": 7.0}}', ["/outreach/window_days"]),
    ('{"outreach": {"window_days": 9223372036854775808}}', ["/outreach/window_days"]),
    ('{"outreach": {"window_days": -9223372036854775809}}', ["/outreach/window_days"]),
    ('{"outreach": {"minimum_effect": 0}}', ["/outreach/minimum_effect"]),
    ('{"outreach": {"minimum_effect": 1.0000001}}', ["/outreach/minimum_effect"]),
    ('{"outreach": {"minimum_effect": NaN}}', ["/outreach/minimum_effect"]),
    ('{"outreach": {"minimum_effect": -Infinity}}', ["/outreach/minimum_effect"]),
    ('{"outreach": null}', ["/outreach"]),
    ('{"outreach": []}', ["/outreach"]),
    ('{"outreach": {"window": 7}}', ["/outreach/window"]),
    ('{"model_quality": {"max_calibration_error": 0}}', ["/model_quality/max_calibration_error"]),
    (
        '{"model_quality": {"max_calibration_error": -0.0}}',
        ["/model_quality/max_calibration_error"],
    ),
    (
        '{"model_quality": {"max_calibration_error": 1.0000001}}',
        ["/model_quality/max_calibration_error"],
    ),
    ('{"model_quality": {"max_calibration_error": NaN}}', ["/model_quality/max_calibration_error"]),
    (
        '{"model_quality": {"max_calibration_error": Infinity}}',
        ["/model_quality/max_calibration_error"],
    ),
    (
        '{"model_quality": {"max_calibration_error": "0.1"}}',
        ["/model_quality/max_calibration_error"],
    ),
    ('{"model_quality": {"min_customers": 0}}', ["/model_quality/min_customers"]),
    ('{"model_quality": {"min_customers": -1}}', ["/model_quality/min_customers"]),
    ('{"model_quality": {"min_customers": 10000001}}', ["/model_quality/min_customers"]),
    ('{"model_quality": {"min_customers": 9223372036854775808}}', ["/model_quality/min_customers"]),
    ('{"model_quality": {"min_customers": 1e3}}', ["/model_quality/min_customers"]),
    ('{"model_quality": {"min_customers": 200.0}}', ["/model_quality/min_customers"]),
    ('{"model_quality": {"min_customers": "200"}}', ["/model_quality/min_customers"]),
    ('{"model_quality": {"min_customers": true}}', ["/model_quality/min_customers"]),
    ('{"model_quality": {"min_customers": null}}', ["/model_quality/min_customers"]),
    ('{"model_quality": {"min_customer": 200}}', ["/model_quality/min_customer"]),
    ('{"model_quality": 1}', ["/model_quality"]),
    # playbooks
    (
        '{"playbooks": {"parking": {"action": "x", "owner": "store", "follow_up_days": 7}}}',
        ["/playbooks/parking"],
    ),
    (
        '{"playbooks": {"PRICE": {"action": "x", "owner": "store", "follow_up_days": 7}}}',
        ["/playbooks/PRICE"],
    ),
    (
        '{"playbooks": {" price": {"action": "x", "owner": "store", "follow_up_days": 7}}}',
        ["/playbooks/ price"],
    ),
    (
        '{"playbooks": {"a/b~c": {"action": "x", "owner": "store", "follow_up_days": 7}}}',
        ["/playbooks/a~1b~0c"],
    ),
    (
        '{"playbooks": {"pri\\u00e7e": {"action": "x", "owner": "store", "follow_up_days": 7}}}',
        ["/playbooks/pri\u00e7e"],
    ),
    (
        '{"playbooks": {"x": {"action": "x", "owner": "store", "follow_up_days": 7}, '
        '"y": {"action": "x", "owner": "store", "follow_up_days": 7}}}',
        ["/playbooks/x", "/playbooks/y"],
    ),
    (
        '{"playbooks": {"'
        + "r" * 65
        + '": {"action": "x", "owner": "store", "follow_up_days": 7}}}',
        ["/playbooks/" + "r" * 65 + "/[key]"],
    ),
    (
        '{"playbooks": {"": {"action": "x", "owner": "store", "follow_up_days": 7}}}',
        ["/playbooks//[key]"],
    ),
    (
        '{"playbooks": {"a\\u0000": {"action": "x", "owner": "store", "follow_up_days": 7}}}',
        ["/playbooks/a\x00/[key]"],
    ),
    (play(action=""), ["/playbooks/price/action"]),
    (play(action="x" * 301), ["/playbooks/price/action"]),
    (play(action="\U0001f600" * 301), ["/playbooks/price/action"]),
    (play(action="a\x00b"), ["/playbooks/price/action"]),
    (
        '{"playbooks": {"price": {"action": "\\ud800", "owner": "store", "follow_up_days": 7}}}',
        ["/playbooks/price/action"],
    ),
    (play(action=5), ["/playbooks/price/action"]),
    (play(owner="Store"), ["/playbooks/price/owner"]),
    (play(owner="store "), ["/playbooks/price/owner"]),
    (play(owner="ceo"), ["/playbooks/price/owner"]),
    (play(owner=None), ["/playbooks/price/owner"]),
    (play(follow_up_days=0), ["/playbooks/price/follow_up_days"]),
    (play(follow_up_days=-1), ["/playbooks/price/follow_up_days"]),
    (play(follow_up_days=366), ["/playbooks/price/follow_up_days"]),
    (play(follow_up_days=7.0), ["/playbooks/price/follow_up_days"]),
    (play(follow_up_days=7.5), ["/playbooks/price/follow_up_days"]),
    (play(follow_up_days="7"), ["/playbooks/price/follow_up_days"]),
    (play(follow_up_days=True), ["/playbooks/price/follow_up_days"]),
    (play(follow_up_days=2**63), ["/playbooks/price/follow_up_days"]),
    (play(follow_up_days=1e308), ["/playbooks/price/follow_up_days"]),
    (play(extra=1), ["/playbooks/price/extra"]),
    ('{"playbooks": {"price": null}}', ["/playbooks/price"]),
    ('{"playbooks": {"price": "call"}}', ["/playbooks/price"]),
    (
        '{"playbooks": {"price": {}}}',
        [
            "/playbooks/price/action",
            "/playbooks/price/owner",
            "/playbooks/price/follow_up_days",
        ],
    ),
    ('{"playbooks": []}', ["/playbooks"]),
    ('{"playbooks": null}', ["/playbooks"]),
    ('{"playbooks": "price"}', ["/playbooks"]),
    # the body itself
    ("", [""]),
    ("null", [""]),
    ("[]", [""]),
    ('"policy"', [""]),
    ('{"holdout": 0.1, "surprise": 1}', ["/surprise"]),
]


async def test_bad_policies_are_a_422_naming_each_field_and_store_nothing(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    for body, pointers in BAD_POLICIES:
        case = body[:90]
        answer = await put_policy(api, keys, body)
        assert_problem(answer, 422, pointers, case)
        assert await policy_version(api, keys) == 0, case
    for body in ("{", '{"holdout": 0.1', "\xff", '{"holdout": 0.1}}'):
        answer = await put_policy(api, keys, body)
        assert (answer.status_code, answer.json()["code"]) == (400, "malformed_json"), body
        assert answer.headers["content-type"].startswith(PROBLEM)
    assert await policy_version(api, keys) == 0


async def test_a_playbook_for_a_reason_with_odd_characters_is_refused_by_name(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    """The pointer escapes / and ~ (RFC 6901) and keeps any other character as it is."""
    for reason, pointer in [
        ("~", "/playbooks/~0"),
        ("/", "/playbooks/~1"),
        ("~1", "/playbooks/~01"),
        ("\u202eprice", "/playbooks/\u202eprice"),
        ("\U0001f600", "/playbooks/\U0001f600"),
        ("price\t", "/playbooks/price\t"),
    ]:
        body = {"playbooks": {reason: {"action": "x", "owner": "store", "follow_up_days": 7}}}
        answer = await put_policy(api, keys, orjson.dumps(body).decode())
        assert_problem(answer, 422, [pointer], reason)
        assert answer.json()["errors"][0]["code"] == "unknown_reason", reason
    assert await policy_version(api, keys) == 0


EDGE_POLICIES = [
    '{"holdout": 0.5}',
    '{"holdout": 0}',
    '{"holdout": -0.0}',
    '{"holdout": 0.1, "holdout": 0.2}',
    '{"outreach": {"window_days": 7, "minimum_effect": 1}}',
    '{"outreach": {"window_days": 365, "minimum_effect": 0.01}}',
    '{"model_quality": {"max_calibration_error": 1, "min_customers": 10000000}}',
    '{"model_quality": {"max_calibration_error": 5e-324, "min_customers": 1}}',
    '{"playbooks": {}}',
    '{"playbooks": {"price": {"action": "\\u0001\\u202e\\ud83d\\ude00", "owner": "head_office", '
    '"follow_up_days": 365}}}',
    play(action="\U0001f600" * 300, follow_up_days=1),
]


async def test_policies_at_the_bounds_are_stored_and_every_report_still_answers(
    api: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    clock.set("2026-05-20T09:00:00+00:00")
    for version, body in enumerate(EDGE_POLICIES, start=1):
        answer = await put_policy(api, keys, body)
        assert answer.status_code == 200, (body[:80], answer.text[:400])
        assert await policy_version(api, keys) == version
        for path in REPORTS:
            report = await api.get(path, headers=keys.read)
            assert report.status_code == 200, (body[:80], path, report.text[:300])
        manager = await api.get("/v1/reports/outreach-effect", headers=keys.read)
        needed = manager.json()["cases_needed"]
        assert needed is None or 0 < needed <= MAX_SAFE_INTEGER, (body[:80], needed)


@pytest.mark.parametrize(
    "body",
    [
        '{"holdout": 1e-320}',
        '{"holdout": 1e-300}',
        '{"holdout": 0.1, "outreach": {"minimum_effect": 1e-15}}',
    ],
)
async def test_a_tiny_holdout_or_effect_is_refused(
    api: httpx.AsyncClient, keys: Keys, clock: Clock, body: str
) -> None:
    clock.set("2026-05-20T09:00:00+00:00")
    answer = await put_policy(api, keys, body)
    pointer = "/outreach/minimum_effect" if "minimum_effect" in body else "/holdout"
    assert_problem(answer, 422, [pointer], body)
    report = await api.get("/v1/reports/outreach-effect", headers=keys.read)
    assert report.status_code == 200, report.text[:300]
    assert report.json()["cases_needed"] is None  # no holdout was stored


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ('{"min_value_at_risk": Infinity}', "/min_value_at_risk"),
        (
            '{"severity": {"medium_value_at_risk": 1, "high_value_at_risk": Infinity}}',
            "/severity/high_value_at_risk",
        ),
    ],
)
async def test_an_infinite_amount_in_the_policy_is_refused(
    api: httpx.AsyncClient, keys: Keys, clock: Clock, body: str, pointer: str
) -> None:
    clock.set("2026-05-20T09:00:00+00:00")
    answer = await put_policy(api, keys, body)
    try:
        assert_problem(answer, 422, [pointer], body)
    finally:
        # Whatever happened, the policy and the reports must still be readable.
        assert (await api.get("/v1/policy", headers=keys.manage)).status_code == 200
        for path in REPORTS:
            assert (await api.get(path, headers=keys.read)).status_code == 200, path


# ---- plans -------------------------------------------------------------------------------

BAD_PLAN_IDS = ["0", "-1", str(2**63), str(2**64), "1.5", "1e3", "abc", "%00", "\u0661", "1%20x"]
FORGED_CURSORS: list[str] = [
    cursor({"s": "plan", "d": "2026-05-15", "i": 2**63}),
    cursor({"s": "plan", "d": "2026-05-15", "i": 0}),
    cursor({"s": "plan", "d": "2026-05-15", "i": -1}),
    cursor({"s": "plan", "d": "0001-01-01", "i": 1}),
    cursor({"s": "plan", "d": "9999-12-31", "i": 1}),
    cursor({"s": "plan", "d": "1969-12-31", "i": 1}),
    cursor({"s": "plan", "d": "2026-02-30", "i": 1}),
    cursor({"s": "plan", "d": 20260515, "i": 1}),
    cursor({"s": "plan", "d": "2026-05-15\x00", "i": 1}),
    cursor({"s": "plan", "d": None, "i": 1}),
    cursor({"s": "plan", "d": "2026-05-15", "i": "x"}),
    cursor({"s": "plan", "d": "2026-05-15", "i": {"a": 1}}),
    cursor({"s": "plan", "d": "2026-05-15", "i": [1]}),
    cursor({"s": "plan", "d": "2026-05-15"}),
    cursor({"s": "alert", "d": "2026-05-15", "i": 1}),
    cursor({"d": "2026-05-15", "i": 1}),
    cursor([1, 2]),
    cursor("plan"),
    cursor(None),
    cursor(b'{"s": "plan", "d": "2026-05-15", "i": 1e400}'),
    cursor(b'{"s": "plan", "d": "2026-05-15", "i": 99999999999999999999999999}'),
    cursor(b'{"s": "plan", "d": "2026-05-15", "i": NaN}'),
    cursor(b"\xff\xfe\x00"),
    "!!!!",
    "\u00e9\u00e9",
    "a",
    "a" * 512,
    "%00",
]


BAD_PLAN_FILTERS: list[tuple[dict[str, Any], str]] = [
    ({"cursor": ""}, "/query/cursor"),
    ({"cursor": "a" * 513}, "/query/cursor"),
    ({"status": "OPEN"}, "/query/status/0"),
    ({"status": "open "}, "/query/status/0"),
    ({"owner": "Store"}, "/query/owner/0"),
    ({"reason": ""}, "/query/reason/0"),
    ({"reason": "r" * 65}, "/query/reason/0"),
    ({"reason": "a\x00"}, "/query/reason/0"),
    ({"reason": ["price"] * 101}, "/query/reason"),
    ({"store_id": "a\x00"}, "/query/store_id/0"),
    ({"store_id": "\x7f"}, "/query/store_id/0"),
    ({"store_id": "s" * 129}, "/query/store_id/0"),
    ({"customer_id": "\x01"}, "/query/customer_id"),
    ({"customer_id": ""}, "/query/customer_id"),
    ({"due_before": "0001-01-01"}, "/query/due_before"),
    ({"due_before": "9999-12-31"}, "/query/due_before"),
    ({"due_before": "2026-02-30"}, "/query/due_before"),
    ({"due_before": "1767225600"}, "/query/due_before"),
    ({"limit": "0"}, "/query/limit"),
    ({"limit": "201"}, "/query/limit"),
    ({"limit": str(2**63)}, "/query/limit"),
    ({"limit": "1e2"}, "/query/limit"),
    ({"limit": "NaN"}, "/query/limit"),
    ({"plan_id": "1"}, "/query/plan_id"),
]


async def test_plan_ids_cursors_and_filters_out_of_range_are_a_4xx_naming_them(
    api: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    ids = await worked(api, keys, clock)
    for raw in BAD_PLAN_IDS:
        for method, path in [
            ("GET", f"/v1/plans/{raw}"),
            ("POST", f"/v1/plans/{raw}/done"),
            ("POST", f"/v1/plans/{raw}/cancel"),
        ]:
            answer = await api.request(method, path, headers=keys.read)
            assert_problem(answer, 422, ["/path/plan_id"], (method, path))
    for method, path in [
        ("GET", f"/v1/plans/{2**63 - 1}"),
        ("POST", f"/v1/plans/{2**63 - 1}/done"),
        ("POST", f"/v1/plans/{2**63 - 1}/cancel"),
    ]:
        answer = await api.request(method, path, headers=keys.read)
        assert (answer.status_code, answer.json()["code"]) == (404, "not_found"), path
    for forged in FORGED_CURSORS:
        answer = await api.get("/v1/plans", params={"cursor": forged}, headers=keys.read)
        assert_problem(answer, 400, ["/query/cursor"], forged[:60])
        assert answer.json()["code"] == "invalid_cursor"
    for params, pointer in BAD_PLAN_FILTERS:
        answer = await api.get("/v1/plans", params=params, headers=keys.read)
        assert_problem(answer, 422, [pointer], str(params)[:60])
    # The largest in-range forged cursor is a page past the end, not an error.
    last = cursor({"s": "plan", "d": "8999-12-31", "i": 2**63 - 1})
    answer = await api.get("/v1/plans", params={"cursor": last}, headers=keys.read)
    assert (answer.status_code, answer.json()["items"]) == (200, []), answer.text[:300]
    for plan_id in ids.values():
        shown = await api.get(f"/v1/plans/{plan_id}", headers=keys.read)
        assert shown.json()["status"] == "open"


BAD_CLOSINGS: list[tuple[str, list[str]]] = [
    ('{"note": "' + "x" * 2001 + '"}', ["/note"]),
    ('{"note": "' + "\U0001f600" * 2001 + '"}', ["/note"]),
    ('{"note": ""}', ["/note"]),
    ('{"note": "   "}', ["/note"]),
    ('{"note": "a\\u0000b"}', ["/note"]),
    ('{"note": "\\ud800"}', ["/note"]),
    ('{"note": 5}', ["/note"]),
    ('{"note": NaN}', ["/note"]),
    ('{"note": ["x"]}', ["/note"]),
    ('{"by": ""}', ["/by"]),
    ('{"by": "   "}', ["/by"]),
    ('{"by": "' + "b" * 101 + '"}', ["/by"]),
    ('{"by": "a\\u0000"}', ["/by"]),
    ('{"by": "\\udfff"}', ["/by"]),
    ('{"by": true}', ["/by"]),
    ('{"note": "ok", "status": "done"}', ["/status"]),
    ('{"note": "ok", "closed_at": "2020-01-01T00:00:00Z"}', ["/closed_at"]),
    ("[]", [""]),
    ('"done"', [""]),
    ("5", [""]),
]


async def test_bad_closings_are_a_422_naming_the_field_and_close_nothing(
    api: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    ids = await worked(api, keys, clock)
    before = (await api.get(f"/v1/plans/{ids['big']}", headers=keys.read)).json()
    headers = {**keys.read, "Content-Type": "application/json"}
    for body, pointers in BAD_CLOSINGS:
        for action in ("done", "cancel"):
            answer = await api.post(
                f"/v1/plans/{ids['big']}/{action}",
                content=body.encode("utf-8", "surrogatepass"),
                headers=headers,
            )
            assert_problem(answer, 422, pointers, (action, body[:60]))
    for body in ("{", '{"note": "x"', "\xff"):
        answer = await api.post(f"/v1/plans/{ids['big']}/done", content=body, headers=headers)
        assert (answer.status_code, answer.json()["code"]) == (400, "malformed_json"), body
    after = (await api.get(f"/v1/plans/{ids['big']}", headers=keys.read)).json()
    assert after == before
    # At the bounds: taken, stored whole, and read back the same on both databases.
    note, by = "\U0001f600" * 2000, "\u0141\u00f3d\u017a " + "b" * 95
    closed = await api.post(
        f"/v1/plans/{ids['big']}/done", json={"note": note, "by": by}, headers=keys.read
    )
    assert closed.status_code == 200, closed.text[:300]
    stored = (await api.get(f"/v1/plans/{ids['big']}", headers=keys.read)).json()
    assert (stored["status"], stored["note"], stored["closed_by"]) == ("done", note, by)


async def test_a_plan_closed_at_once_many_times_is_closed_once(
    api: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    ids = await worked(api, keys, clock)
    for plan_id in ids.values():
        actions = ["done", "cancel"] * 3
        answers = await asyncio.gather(
            *(
                api.post(
                    f"/v1/plans/{plan_id}/{action}",
                    json={"note": f"{action}-{n}"},
                    headers=keys.read,
                )
                for n, action in enumerate(actions)
            )
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200] + [409] * 5, statuses
        winner = next(answer.json() for answer in answers if answer.status_code == 200)
        for answer in answers:
            if answer.status_code == 409:
                assert answer.json()["code"] == "plan_closed"
        stored = (await api.get(f"/v1/plans/{plan_id}", headers=keys.read)).json()
        assert stored == winner
        again = await api.post(f"/v1/plans/{plan_id}/done", headers=keys.read)
        assert (again.status_code, again.json()["code"]) == (409, "plan_closed")
        assert (await api.get(f"/v1/plans/{plan_id}", headers=keys.read)).json() == winner


# ---- arms --------------------------------------------------------------------------------

ODD_ARMS = [
    "Contact",
    "CONTROL",
    "All",
    " contact",
    "contact ",
    "control\t",
    "all\n",
    "contact\x00",
    "\x00",
    "",
    "control,contact",
    "\u0441ontrol",  # a Cyrillic es
    "contro\u0301l",
    "x" * 10_000,
    "null",
    "0",
    "true",
]
ARM_PATHS = ("/v1/alerts", "/v1/cases", "/v1/alerts/changes")


async def test_odd_arms_are_a_422_naming_arm(
    api: httpx.AsyncClient, keys: Keys, clock: Clock
) -> None:
    await lapsed_with_formula_ids(api, keys, clock)
    for path in ARM_PATHS:
        for arm in ODD_ARMS:
            answer = await api.get(path, params={"arm": arm}, headers=keys.read)
            assert_problem(answer, 422, ["/query/arm"], (path, arm[:20]))
        for arm in ("contact", "control", "all"):
            answer = await api.get(path, params={"arm": arm}, headers=keys.read)
            assert answer.status_code == 200, (path, arm, answer.text[:300])


BAD_ARMS: list[tuple[Any, str]] = [
    ([], "/filters/arms"),
    (["contact", "control", "contact"], "/filters/arms"),
    ("contact", "/filters/arms"),
    ({"contact": True}, "/filters/arms"),
    (["Control"], "/filters/arms/0"),
    ([" contact"], "/filters/arms/0"),
    (["contact", "control\x00"], "/filters/arms/1"),
    (["all"], "/filters/arms/0"),
    ([None], "/filters/arms/0"),
    ([1], "/filters/arms/0"),
    ([["contact"]], "/filters/arms/0"),
    (["x" * 10_000], "/filters/arms/0"),
]


async def test_webhook_endpoints_with_bad_arms_are_refused_and_change_nothing(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    url = "http://127.0.0.1:9/hook"
    created = await api.post(
        "/v1/webhooks/endpoints",
        json={"url": url, "filters": {"arms": ["control"]}},
        headers=keys.manage,
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()
    path = f"/v1/webhooks/endpoints/{endpoint['id']}"
    for arms, pointer in BAD_ARMS:
        case = repr(arms)[:40]
        body = {"url": url, "filters": {"arms": arms}}
        answer = await api.post("/v1/webhooks/endpoints", json=body, headers=keys.manage)
        assert_problem(answer, 422, [pointer], ("POST", case))
        patched = await api.patch(path, json={"filters": {"arms": arms}}, headers=keys.manage)
        assert_problem(patched, 422, [pointer], ("PATCH", case))
    listed = await api.get("/v1/webhooks/endpoints", headers=keys.manage)
    assert [item["id"] for item in listed.json()["items"]] == [endpoint["id"]]
    assert (await api.get(path, headers=keys.manage)).json()["filters"] == endpoint["filters"]
