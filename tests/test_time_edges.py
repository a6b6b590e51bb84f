"""Dates and times at the edges (year 1 and 9999, offsets of ±23:59, no offset at all, a
bare date) in every parameter and body field that takes one, on both databases: each is
answered or refused with a problem+json naming it, never a 5xx (these were overflows and
driver errors: 500s)."""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import Clock, Keys, event
from tests.test_alerts_api import lapse
from tests.test_bad_input import assert_problem

pytestmark = pytest.mark.anyio

# What the API documents: every date and time lies in [1970-01-01, 9000-01-01), and a
# date-time carries its UTC offset.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)

EDGE_DAYS = [
    date.min,
    date.min + timedelta(days=1),
    date(1969, 12, 31),
    date(1970, 1, 1),
    date(2026, 5, 1),
    date(8999, 12, 31),
    date(9000, 1, 1),
    date.max - timedelta(days=1),
    date.max,
]
days = st.one_of(st.sampled_from(EDGE_DAYS), st.dates())
clock_times = st.one_of(
    st.sampled_from(["00:00:00", "23:59:59", "12:00:00.5"]),
    st.times().map(lambda t: t.isoformat()),
)
offsets = st.one_of(
    st.sampled_from(["", "Z", "+00:00", "+23:59", "-23:59", "+01:00", "-01:00"]),
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
        lambda m: f"{'-' if m < 0 else '+'}{abs(m) // 60:02}:{abs(m) % 60:02}"
    ),
)
# A date-time as a client may write one: with or without an offset, or just a date.
instants = st.one_of(
    st.builds(lambda d, t, o: f"{d.isoformat()}T{t}{o}", days, clock_times, offsets),
    days.map(date.isoformat),
)
# A date as a client may write one: mostly a date, sometimes a date-time.
day_texts = st.one_of(days.map(date.isoformat), instants)

FAST = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def taken_instant(text: str) -> datetime | None:
    """The instant the API must take for `text`, or None when it must refuse it."""
    if "T" not in text:
        return None  # a bare date has no offset
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None or not EARLIEST <= value < LATEST:
        return None
    return value


def taken_day(text: str) -> date | None:
    """The day the API must take for a date-only `text`, or None when it must refuse it."""
    value = date.fromisoformat(text)
    return value if EARLIEST.date() <= value < LATEST.date() else None


def assert_refused_naming(response: httpx.Response, status: int, *pointers: str) -> None:
    code = "invalid_cursor" if status == 400 else "validation_error"
    problem = assert_problem(response, status, code)
    assert {error["pointer"] for error in problem["errors"]} == set(pointers), response.text


@pytest.fixture
async def alerts(client: httpx.AsyncClient, keys: Keys, clock: Clock) -> dict[str, Any]:
    return await lapse(client, keys, clock)


@FAST
@given(name=st.sampled_from(["opened_after", "opened_before"]), text=instants)
@example(name="opened_after", text="0001-01-01T00:00:00+01:00")
@example(name="opened_before", text="9999-12-31T23:59:59-01:00")
@example(name="opened_after", text="2026-05-01T09:00:00")
@example(name="opened_after", text="2026-05-01")
async def test_alert_filters_take_an_aware_time_in_range_and_refuse_others_by_name(
    client: httpx.AsyncClient, keys: Keys, alerts: dict[str, Any], name: str, text: str
) -> None:
    response = await client.get("/v1/alerts", params={name: text}, headers=keys.read)
    taken = taken_instant(text)
    if taken is None:
        assert_refused_naming(response, 422, f"/query/{name}")
        return
    assert response.status_code == 200, response.text
    opened = datetime.fromisoformat(alerts["big"]["opened_at"])
    listed = len(response.json()["items"])
    assert listed == (3 if (opened >= taken) == (name == "opened_after") else 0)


@FAST
@given(sort=st.sampled_from(["opened_at", "-opened_at"]), text=instants)
@example(sort="opened_at", text="0001-01-01T00:00:00+01:00")
@example(sort="-opened_at", text="9999-12-31T23:59:59-23:59")
@example(sort="opened_at", text="2026-05-01T09:00:00")
async def test_a_forged_cursor_with_any_time_is_followed_or_refused_as_a_bad_cursor(
    client: httpx.AsyncClient, keys: Keys, alerts: dict[str, Any], sort: str, text: str
) -> None:
    forged = orjson.dumps({"s": sort, "v": text, "i": 1})
    cursor = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    response = await client.get(
        "/v1/alerts", params={"sort": sort, "cursor": cursor}, headers=keys.read
    )
    if taken_instant(text) is None:
        assert_refused_naming(response, 400, "/query/cursor")
    else:
        assert response.status_code == 200, response.text


@FAST
@given(text=instants)
@example(text="9999-12-31T23:59:59-01:00")
@example(text="8999-12-31T23:59:59Z")
@example(text="0001-01-01T00:00:00+23:59")
async def test_a_snooze_until_any_time_is_taken_or_refused_naming_until(
    client: httpx.AsyncClient, keys: Keys, clock: Clock, alerts: dict[str, Any], text: str
) -> None:
    url = f"/v1/alerts/{alerts['big']['id']}/snooze"
    response = await client.post(url, json={"until": text}, headers=keys.read)
    taken = taken_instant(text)
    if taken is None or taken <= clock():  # a snooze must also end in the future
        assert_refused_naming(response, 422, "/until")
        return
    assert response.status_code == 200, response.text
    assert datetime.fromisoformat(response.json()["snoozed_until"]) == taken


_ids = itertools.count()
FUTURE_SKEW = timedelta(minutes=5)  # RADAR_MAX_FUTURE_SKEW's default


@FAST
@given(text=instants)
@example(text="9999-12-31T23:59:59-23:59")
@example(text="0001-01-01T00:00:00+01:00")
async def test_an_event_at_any_time_is_stored_or_refused_naming_occurred_at(
    client: httpx.AsyncClient, keys: Keys, text: str
) -> None:
    body = event(f"edge-{next(_ids)}", occurred_at=text)
    now = datetime.now(UTC)
    response = await client.post("/v1/purchases", json=body, headers=keys.ingest)
    taken = taken_instant(text)
    if taken is None or taken > now + FUTURE_SKEW + timedelta(minutes=1):
        assert_refused_naming(response, 422, "/occurred_at")
    elif taken <= now:
        assert response.status_code == 201, response.text


@pytest.fixture
async def endpoint_id(client: httpx.AsyncClient, keys: Keys) -> int:
    created = await client.post(
        "/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/crm"}, headers=keys.manage
    )
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


@FAST
@given(since=instants, until=st.none() | instants)
@example(since="0001-01-01T00:00:00+01:00", until=None)
@example(since="2026-01-01T00:00:00Z", until="9999-12-31T23:59:59-01:00")
async def test_recover_takes_any_span_in_range_and_names_each_bad_end(
    client: httpx.AsyncClient, keys: Keys, endpoint_id: int, since: str, until: str | None
) -> None:
    body = {"since": since} if until is None else {"since": since, "until": until}
    url = f"/v1/webhooks/endpoints/{endpoint_id}/recover"
    response = await client.post(url, json=body, headers=keys.manage)
    bad = [f"/{name}" for name, text in body.items() if taken_instant(text) is None]
    if bad:
        assert_refused_naming(response, 422, *bad)
    else:
        assert (response.status_code, response.json()) == (202, {"requeued": 0})


@FAST
@given(
    path=st.sampled_from(
        ["/v1/reports/defection-rate", "/v1/reports/reasons", "/v1/reports/response-times"]
    ),
    start=st.none() | day_texts,
    end=st.none() | day_texts,
    period=st.sampled_from(["week", "month"]),
)
@example(path="/v1/reports/defection-rate", start="9999-12-01", end="9999-12-31", period="month")
@example(path="/v1/reports/defection-rate", start=None, end="9999-12-31", period="week")
@example(path="/v1/reports/defection-rate", start=None, end="8999-12-31", period="month")
@example(path="/v1/reports/reasons", start=None, end="0001-01-02", period="month")
async def test_a_report_span_at_any_dates_is_answered_or_refused_naming_the_date(
    client: httpx.AsyncClient,
    keys: Keys,
    alerts: dict[str, Any],
    path: str,
    start: str | None,
    end: str | None,
    period: str,
) -> None:
    params = {name: text for name, text in (("from", start), ("to", end)) if text is not None}
    if path.endswith("defection-rate"):
        params["period"] = period
    response = await client.get(path, params=params, headers=keys.read)
    dates_only = all("T" not in text for name, text in params.items() if name != "period")
    out_of_range = [
        f"/query/{name}"
        for name in ("from", "to")
        if name in params and dates_only and taken_day(params[name]) is None
    ]
    if out_of_range:
        assert_refused_naming(response, 422, *out_of_range)
    elif response.status_code != 200:  # or a span that is empty or longer than three years
        problem = assert_problem(response, 422, "validation_error")
        pointers = {error["pointer"] for error in problem["errors"]}
        assert pointers, response.text
        named = {"/query/from"} if dates_only else {"/query/from", "/query/to"}
        assert pointers <= named, response.text


@FAST
@given(text=day_texts, horizon=st.integers(min_value=1, max_value=730))
@example(text="8999-12-31", horizon=730)
@example(text="1970-01-01", horizon=1)
@example(text="0001-01-01", horizon=730)
async def test_a_customer_is_scored_as_of_any_day_in_range_or_refused_naming_as_of(
    client: httpx.AsyncClient, keys: Keys, alerts: dict[str, Any], text: str, horizon: int
) -> None:
    params = {"as_of": text, "horizon_days": str(horizon)}
    response = await client.get("/v1/customers/big", params=params, headers=keys.read)
    if "T" in text:  # a date-time for a day: taken when it is a whole day, else refused
        assert response.status_code in (200, 422), response.text
        if response.status_code == 422:
            assert_refused_naming(response, 422, "/query/as_of")
    elif taken_day(text) is None:
        assert_refused_naming(response, 422, "/query/as_of")
    else:
        assert response.status_code == 200, response.text
