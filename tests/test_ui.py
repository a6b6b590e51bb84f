"""The page in a real browser (headless Chromium): the call list, working a case, the
customer view, the manager's view and /docs, on a real `radar serve`. Each view is saved as
a screenshot at 1400 and 400 px wide under var/screenshots/ for people to look at.

The tests share one `radar serve` and one browser (each starts signed out, on a blank page):
each test makes its own key and works on its own customers and stores, so that none sees
another's cases."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import date, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.test_server import create_keys
from tests.test_server import serving as served

pytestmark = pytest.mark.slow  # runs in CI; locally with RADAR_TEST_SLOW=1

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"
# Reasons an operator might configure that are markup or script: they must show as text.
HOSTILE_REASONS = [
    "</script><script>alert(1)</script>",
    '"; alert(1); "',
    '<img src=x onerror="window.pwned=1">',
    "<!--",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        message = "Chromium and ChromeDriver are needed (Debian: chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: Any) -> Any:
    """The module's browser as a new one would be: a blank page, no cookies, no console
    messages left from an earlier test, 1400 by 900 px."""
    from selenium.common.exceptions import NoAlertPresentException

    with suppress(NoAlertPresentException):
        chromium.switch_to.alert.dismiss()  # a dialog an earlier, failed test left open
    chromium.get("about:blank")
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    chromium.get_log("browser")  # read, and so emptied
    chromium.set_window_size(1400, 900)
    assert chromium.get_cookies() == []
    return chromium


CRM = "http://127.0.0.1:9/cards/{customer_id}?from=radar"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One `radar serve` for the module's tests, on a fresh SQLite file: its URL and file.
    Rate limits are off, as in conftest.py (test_rate_limits.py is about them): `lapse`
    polls faster than a key may read."""
    database = tmp_path_factory.mktemp("ui") / "radar.db"
    limits = {"rate_limit_ingest": "off", "rate_limit_read": "off"}
    with served(database, {}, crm_customer_url=CRM, **limits) as (url, _):
        yield url, database


@pytest.fixture
def served_key(server: tuple[str, Path], request: pytest.FixtureRequest) -> tuple[str, str]:
    """The module's server's URL, and a key of the test's own (ingest, read and manage)."""
    url, database = server
    name = request.node.name[:100]
    keys = asyncio.run(create_keys(f"sqlite:///{database}", {name: ["ingest", "read", "manage"]}))
    return url, keys[name]


@contextmanager
def serving(directory: Path, **settings: str) -> Iterator[tuple[str, str]]:
    """`radar serve` on a fresh SQLite file (RADAR_* settings as keywords): its URL and a
    key with the ingest, read and manage scopes, named maria."""
    scopes = ["ingest", "read", "manage"]
    with served(directory / "radar.db", {"maria": scopes}, **settings) as (url, keys):
        yield url, keys["maria"]


def lapse(url: str, headers: dict[str, str], amounts: dict[str, str], store: str = "north") -> None:
    """Customers who came every week for twelve weeks, then stopped months ago."""
    first = date.today() - timedelta(weeks=30)
    events = [
        {
            "event_id": f"{customer}-{n}",
            "customer_id": customer,
            "store_id": store,
            "occurred_at": f"{first + timedelta(weeks=n)}T12:00:00Z",
            "amount": amount,
            "currency": "EUR",
            "items": [{"sku": "x", "category": "bakery" if n % 2 else "wine", "amount": amount}],
        }
        for customer, amount in amounts.items()
        for n in range(12)
    ]
    stored = httpx.post(
        f"{url}/v1/purchases/batch", json={"events": events}, headers=headers, timeout=30
    )
    assert stored.json()["accepted"] == len(events), stored.text[:500]
    # The scorer folds them (and opens the alerts) moments after the answer: wait for it, as
    # a client reading its own writes would, on `pending_events`.
    deadline = time.monotonic() + 40
    for customer in amounts:
        while True:
            view = httpx.get(f"{url}/v1/customers/{customer}", headers=headers, timeout=10)
            if view.status_code == 200 and view.json()["pending_events"] == 0:
                break
            assert time.monotonic() < deadline, view.text
            time.sleep(0.02)


def sign_in(browser: Any, url: str, key: str, person: str = "Ola", store: str = "") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{url}/ui/")  # not signed in: the sign-in form, then back here
    assert "/ui/login" in browser.current_url
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.ID, "person").send_keys(person)
    if store:
        browser.find_element(By.ID, "store").send_keys(store)
    browser.find_element(By.CSS_SELECTOR, ".login button[type=submit]").click()
    WebDriverWait(browser, 15, poll_frequency=0.05).until(
        lambda d: d.current_url.rstrip("/").endswith("/ui")
    )


def resized(browser: Any, width: int, height: int) -> None:
    """The window at this size, once the page has followed: the charts resize on the
    window's resize (a ResizeObserver, then the next animation frame), so the page has
    drawn at the new size three frames after the window took it."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(width, height)
    WebDriverWait(browser, 10, poll_frequency=0.02).until(
        lambda d: d.execute_script("return window.innerWidth") == width
    )
    browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        requestAnimationFrame(() => requestAnimationFrame(() => requestAnimationFrame(done)));"""
    )


def shoot(browser: Any, name: str) -> None:
    """The whole page at 1400 and 400 px wide, as people see it."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1400, 400):
        resized(browser, width, 900)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        resized(browser, width, min(int(height), 8000))
        assert browser.save_screenshot(str(SCREENSHOTS / f"{name}-{width}.png"))
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} at {width} px is {overflow} px wider than the window"
    browser.set_window_size(1400, 900)


def click(browser: Any, element: Any) -> None:
    """Click as a person would: the element scrolled to the middle of the window first."""
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def console_errors(browser: Any) -> list[str]:
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon" not in entry["message"]
    ]


def api(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


@contextmanager
def policy_kept(client: httpx.Client) -> Iterator[dict[str, Any]]:
    """The policy as a PUT takes it, put back as it was when done (the server is shared)."""
    body = client.get("/v1/policy").json()
    policy = {
        name: value
        for name, value in body.items()
        if name not in ("version", "source", "created_by", "created_at")
    }
    try:
        yield policy
    finally:
        assert client.put("/v1/policy", json=policy).status_code == 200


def test_the_call_list_shows_who_why_and_what_at_stake_pages_and_follows_the_feed(
    served_key: tuple[str, str], browser: Any
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, key = served_key
    # This test's stores: the list shows their cases only (the server is shared).
    north, south = "list-north", "list-south"
    listed = f"{url}/ui/?store={north}&store={south}"
    with api(url, key) as client, policy_kept(client) as kept:
        headers = {"Authorization": f"Bearer {key}"}
        amounts = {f"list-{n:02d}": str(10 + n * 7) for n in range(30)}
        lapse(url, headers, amounts, store=north)
        # The questions come from the policy: a business writes its own.
        questions = {"inactivity": ["Did our new opening hours stop you coming?"]}
        policy = {**kept, "questions": {**kept["questions"], **questions}}
        assert client.put("/v1/policy", json=policy).status_code == 200
        cases: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = client.get(
                "/v1/cases",
                params={
                    "limit": 200,
                    "store_id": [north, south],
                    **({"cursor": cursor} if cursor else {}),
                },
            ).json()
            cases += page["items"]
            if not page["has_more"]:
                break
            cursor = page["next_cursor"]
        assert len(cases) == 30

        sign_in(browser, url, key)
        browser.get(listed)
        wait = WebDriverWait(
            browser, 30, ignored_exceptions=[StaleElementReferenceException], poll_frequency=0.05
        )
        count = browser.find_element(By.ID, "count").text
        assert count == "Customers 1\u201325 of 30 · page 1 of 2"
        shown = browser.find_elements(By.CSS_SELECTOR, "li.case")
        assert [item.get_attribute("data-customer") for item in shown] == [
            case["customer_id"] for case in cases[:25]
        ]
        top, head = shown[0], cases[0]
        assert top.find_element(By.CSS_SELECTOR, ".why").text.endswith(head["summary"])
        link = top.find_element(By.CSS_SELECTOR, "a.crm").get_attribute("href")
        assert link == f"http://127.0.0.1:9/cards/{head['customer_id']}?from=radar"
        value = top.find_element(By.CSS_SELECTOR, ".facts .money").text
        assert value == f"EUR {Decimal(head['value_at_risk']):,.2f}"
        facts = top.find_element(By.CSS_SELECTOR, ".facts").text
        last_visit = date.today() - timedelta(weeks=19)
        assert f"{last_visit}" in facts
        assert "usually every 7 days" in facts
        # On a wide screen the questions are open beside the evidence.
        assert top.find_element(By.CSS_SELECTOR, ".ask").get_attribute("open") is not None
        assert top.find_element(By.CSS_SELECTOR, ".ask ol").text == questions["inactivity"][0]
        assert "OVERDUE SINCE" in facts  # dt is shown in capitals
        assert console_errors(browser) == []
        shoot(browser, "call-list")

        browser.find_element(By.CSS_SELECTOR, ".pager a[rel=next]").click()
        wait.until(lambda d: "page 2 of 2" in d.find_element(By.ID, "count").text)
        assert (
            browser.find_element(By.ID, "count").text == "Customers 26\u201330 of 30 · page 2 of 2"
        )
        shown = browser.find_elements(By.CSS_SELECTOR, "li.case")
        assert [item.get_attribute("data-customer") for item in shown] == [
            case["customer_id"] for case in cases[25:]
        ]
        # Search by the start of a customer id.
        browser.get(f"{url}/ui/?q=list-0")
        found = [
            e.get_attribute("data-customer")
            for e in browser.find_elements(By.CSS_SELECTOR, "li.case")
        ]
        assert sorted(found) == [f"list-{n:02d}" for n in range(10)]

        # A customer who lapses now appears on the open list without a reload.
        browser.get(listed)
        browser.find_element(By.TAG_NAME, "h1").click()
        lapse(url, headers, {"list-new": "900"}, store=south)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "li.case[data-customer='list-new']"))
        assert browser.find_element(By.ID, "count").text.endswith("of 31 · page 1 of 2")
        # Filters: one store.
        browser.get(f"{url}/ui/?store={south}")
        found = [
            e.get_attribute("data-customer")
            for e in browser.find_elements(By.CSS_SELECTOR, "li.case")
        ]
        assert found == ["list-new"]


def test_a_case_is_resolved_only_with_an_outcome_and_a_reason_confirmed_and_undoable(
    served_key: tuple[str, str], browser: Any
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, key = served_key
    listed = f"{url}/ui/?store=work"  # this test's cases (the server is shared)
    with api(url, key) as client:
        lapse(url, {"Authorization": f"Bearer {key}"}, {"work-a": "90", "work-b": "40"}, "work")
        alert_a = client.get("/v1/alerts", params={"customer_id": "work-a"}).json()["items"][0]
        sign_in(browser, url, key, person="Ola")
        browser.get(listed)
        wait = WebDriverWait(
            browser, 30, ignored_exceptions=[StaleElementReferenceException], poll_frequency=0.05
        )

        def case(customer: str) -> Any:
            return browser.find_element(By.CSS_SELECTOR, f"li.case[data-customer='{customer}']")

        # "I'm calling" acknowledges it, in the name given at sign-in.
        case("work-a").find_element(By.CSS_SELECTOR, ".work button.primary").click()
        wait.until(lambda d: "acknowledged" in d.find_element(By.ID, "toast").text)
        wait.until(lambda d: case("work-a").find_elements(By.CSS_SELECTOR, ".status.acknowledged"))
        alert = client.get(f"/v1/alerts/{alert_a['id']}").json()["alert"]
        assert (alert["status"], alert["acknowledged_by"]) == ("acknowledged", "Ola")
        assert alert["assigned_to"] == "Ola"  # "I'm calling": nobody else calls them too

        browser.get(listed)  # a list that no refresh replaces under the test's hands
        case("work-a").find_element(By.CSS_SELECTOR, ".work-it summary").click()
        form = case("work-a").find_element(By.CSS_SELECTOR, "form[data-resolve]")
        submit = form.find_element(By.CSS_SELECTOR, "button[type=submit]")
        outcome = Select(form.find_element(By.NAME, "outcome"))
        reason = Select(form.find_element(By.NAME, "reason"))
        # Nothing is chosen for the person: no default outcome nor reason.
        assert (
            outcome.first_selected_option.get_attribute("value"),
            reason.first_selected_option.get_attribute("value"),
        ) == ("", "")
        assert not submit.is_enabled()
        outcome.select_by_value("lost")
        assert not submit.is_enabled()  # lost needs the reason they gave
        reason.select_by_value("price")
        assert submit.is_enabled()
        outcome.select_by_value("")
        assert not submit.is_enabled()
        outcome.select_by_value("lost")
        shoot(browser, "call-list-resolving")
        click(browser, submit)
        confirm = form.find_element(By.CSS_SELECTOR, ".confirm")
        assert confirm.is_displayed()
        assert "work-a" in confirm.text
        assert "lost" in confirm.text
        assert "price" in confirm.text
        click(browser, confirm.find_element(By.CSS_SELECTOR, "[data-confirm]"))
        # A few seconds to undo: the case leaves the list, and comes back on Undo.
        toast = browser.find_element(By.ID, "toast")
        assert "work-a will be recorded in" in toast.text
        assert not case("work-a").is_displayed()
        toast.find_element(By.TAG_NAME, "button").click()
        assert case("work-a").is_displayed()
        time.sleep(6)
        assert client.get(f"/v1/alerts/{alert_a['id']}").json()["alert"]["status"] == "acknowledged"

        click(browser, submit)
        click(browser, form.find_element(By.CSS_SELECTOR, "[data-confirm]"))
        wait.until(lambda d: "resolved as lost" in d.find_element(By.ID, "toast").text)
        alert = client.get(f"/v1/alerts/{alert_a['id']}").json()["alert"]
        assert (alert["status"], alert["resolution"], alert["reason"], alert["resolved_by"]) == (
            "resolved",
            "lost",
            "price",
            "Ola",
        )
        wait.until(
            lambda d: not d.find_elements(By.CSS_SELECTOR, "li.case[data-customer='work-a']")
        )

        # Assign and note from the page.
        browser.get(listed)
        case("work-b").find_element(By.CSS_SELECTOR, ".work-it summary").click()
        to = case("work-b").find_element(By.CSS_SELECTOR, "input[name=to]")
        to.clear()
        to.send_keys("Jon")
        to.submit()
        wait.until(lambda d: "assigned to Jon" in d.find_element(By.ID, "toast").text)
        browser.get(listed)
        case("work-b").find_element(By.CSS_SELECTOR, ".work-it summary").click()
        note = case("work-b").find_element(By.CSS_SELECTOR, "input[name=note]")
        note.send_keys("No answer; try after six.")
        note.submit()
        wait.until(lambda d: "note added" in d.find_element(By.ID, "toast").text)
        assert (
            client.get("/v1/alerts", params={"assigned_to": "Jon"}).json()["items"][0][
                "customer_id"
            ]
            == "work-b"
        )
        assert console_errors(browser) == []


def test_the_server_refuses_a_resolve_without_its_choices_and_changes_from_elsewhere(
    served_key: tuple[str, str],
) -> None:
    url, key = served_key
    with api(url, key) as client:
        lapse(url, {"Authorization": f"Bearer {key}"}, {"refuse-a": "90"}, "refuse")
        alert = client.get("/v1/alerts", params={"customer_id": "refuse-a"}).json()["items"][0]
        with httpx.Client(base_url=url, timeout=10) as page:
            assert page.get("/ui/manager").status_code == 303  # not signed in
            refused = page.post("/ui/login", data={"key": "rk_bad_key", "next": "/ui/manager"})
            assert refused.status_code == 401
            assert "unknown or revoked" in refused.text
            signed = page.post("/ui/login", data={"key": key, "next": "/ui/manager"})
            assert (signed.status_code, signed.headers["location"]) == (303, "/ui/manager")
            cookie = signed.headers["set-cookie"].lower()
            assert "httponly" in cookie
            assert "samesite=strict" in cookie
            for form, message in (
                ({}, "Choose the outcome"),
                ({"outcome": "won_back"}, "Choose the reason"),
                ({"outcome": "gone"}, "Choose the outcome"),
            ):
                answer = page.post("/ui/cases/refuse-a/resolve", data=form)
                assert answer.status_code == 422
                assert message in answer.text
            other = page.post(
                "/ui/cases/refuse-a/resolve",
                data={"outcome": "not_a_defection"},
                headers={"Origin": "https://elsewhere.example"},
            )
            assert other.status_code == 403
            assert client.get(f"/v1/alerts/{alert['id']}").json()["alert"]["status"] == "open"
            # Open redirects are not: `next` only leads back into the page.
            away = page.post("/ui/login", data={"key": key, "next": "https://elsewhere.example/"})
            assert away.headers["location"] == "/ui/"


def test_the_customer_view_charts_visits_and_spend_with_axes(
    served_key: tuple[str, str], browser: Any
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, key = served_key
    with api(url, key) as client:
        lapse(url, {"Authorization": f"Bearer {key}"}, {"chart-a": "42.50"}, "chart")
        alert = client.get("/v1/alerts", params={"customer_id": "chart-a"}).json()["items"][0]
        client.post(
            f"/v1/alerts/{alert['id']}/notes", json={"text": "Moved to the coast?", "by": "Ola"}
        )
        customer = client.get("/v1/customers/chart-a").json()
        sign_in(browser, url, key)
        browser.get(f"{url}/ui/?store=chart")  # this test's cases (the server is shared)
        browser.find_element(By.CSS_SELECTOR, "li.case .customer").click()
        wait = WebDriverWait(
            browser, 30, ignored_exceptions=[StaleElementReferenceException], poll_frequency=0.05
        )
        wait.until(
            lambda d: d.execute_script(
                "return !!(window.Chart && Chart.getChart(document.getElementById('weekly-chart')))"
            )
        )
        chart = browser.execute_script(
            """const chart = Chart.getChart(document.getElementById('weekly-chart'));
            const axis = (id) => ({title: chart.options.scales[id].title.text,
                                   ticks: chart.scales[id].ticks.map((t) => t.label)});
            return {x: axis('x'), visits: axis('visits'), spend: axis('spend'),
                    visitData: chart.data.datasets[0].data, spendData: chart.data.datasets[1].data,
                    weeks: chart.data.labels.length};"""
        )
        assert chart["weeks"] == 53
        assert chart["x"]["title"] == "Week starting"
        assert len(chart["x"]["ticks"]) >= 5
        assert chart["visits"]["title"] == "Visits"
        assert chart["visits"]["ticks"][0] == "0"
        assert chart["spend"]["title"] == "Net spend (EUR)"
        assert all(tick.startswith("EUR ") for tick in chart["spend"]["ticks"])
        in_chart = sum(chart["visitData"])
        in_api = sum(week["visits"] for week in customer["pattern"]["weekly"])
        assert in_chart == in_api > 0
        assert sum(chart["spendData"]) == pytest.approx(
            sum(float(week["net_amount"]) for week in customer["pattern"]["weekly"])
        )
        page = browser.find_element(By.TAG_NAME, "main").text
        assert f"{round(customer['scores']['p_no_purchase_within'] * 100)}%" in page
        assert f"EUR {Decimal(str(customer['scores']['value_at_risk'])):,.2f}" in page
        assert "Moved to the coast?" in page
        assert "Ola" in page  # the note, and who wrote it
        assert "bakery" in page
        # The case is worked from the customer's page too, and the page follows the change.
        assert "To call: stopped coming" in page
        browser.find_element(By.CSS_SELECTOR, "#customer-body button[hx-post$=acknowledge]").click()
        wait.until(lambda d: "acknowledged" in d.find_element(By.ID, "toast").text)
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "button[hx-post$=acknowledge]"))
        wait.until(
            lambda d: d.execute_script(
                "return !!Chart.getChart(document.getElementById('weekly-chart'))"
            )
        )
        assert "acknowledged" in browser.find_element(By.CSS_SELECTOR, ".case-panel").text
        assert "wine" in page
        assert console_errors(browser) == []
        shoot(browser, "customer")


def counted(client: httpx.Client) -> dict[str, int]:
    """Customers lost and won back, as the reports API counts them (the manager's span)."""
    rows = client.get("/v1/reports/reasons").json()["rows"]
    return {
        outcome: sum(row["customers"] for row in rows if row["outcome"] == outcome)
        for outcome in ("lost", "won_back")
    }


def test_the_managers_view_shows_the_apis_numbers(
    served_key: tuple[str, str], browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, key = served_key
    with api(url, key) as client:
        # The view is the whole chain's, and the server is shared: what this test resolves is
        # counted on top of what the other tests did.
        before = counted(client)
        lapse(
            url,
            {"Authorization": f"Bearer {key}"},
            {"mgr-a": "90", "mgr-b": "40", "mgr-c": "20"},
            store="mgr-north",
        )
        lapse(
            url,
            {"Authorization": f"Bearer {key}"},
            {"mgr-d": "70", "mgr-e": "30"},
            store="mgr-south",
        )
        alerts = {
            customer: client.get("/v1/alerts", params={"customer_id": customer}).json()["items"][0]
            for customer in ("mgr-a", "mgr-b", "mgr-c", "mgr-d", "mgr-e")
        }
        for customer, outcome, reason in (
            ("mgr-a", "lost", "price"),
            ("mgr-b", "lost", "moved_away"),
            ("mgr-d", "lost", "price"),
            ("mgr-e", "won_back", "staff_attitude"),
        ):
            answer = client.post(
                f"/v1/alerts/{alerts[customer]['id']}/resolve",
                json={"outcome": outcome, "reason": reason},
            )
            assert answer.status_code == 200, answer.text
        sign_in(browser, url, key)
        browser.get(f"{url}/ui/manager")
        WebDriverWait(browser, 30, poll_frequency=0.05).until(
            lambda d: d.execute_script(
                "return !!(window.Chart && Chart.getChart(document.getElementById('rate-chart')))"
            )
        )

        def text(css: str) -> str:
            found: str = browser.find_element(By.CSS_SELECTOR, css).text
            return found

        today = date.today()
        month = today.replace(day=1)
        start = date(month.year - 1, month.month, 1)
        end = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        rates = client.get(
            "/v1/reports/defection-rate", params={"from": str(start), "to": str(end)}
        ).json()["rows"]
        current = next(r for r in rates if r["period_start"] == str(month))
        assert text("#rate-current") == (
            "\u2013" if current["rate"] is None else f"{current['rate'] * 100:.1f}%"
        )
        values = client.get("/v1/reports/value-at-risk").json()["rows"]
        total = sum(Decimal(row["value_at_risk"]) for row in values)
        assert text("#value-at-risk") == f"EUR {total:,.2f}"
        reasons = client.get("/v1/reports/reasons").json()["rows"]
        lost: dict[str, Decimal] = defaultdict(Decimal)
        for row in reasons:
            if row["outcome"] == "lost":
                lost[row["reason"]] += Decimal(row["value_lost"])
        shown = [
            [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "#lost-reasons tbody tr")
        ]
        assert [(r[0], r[2]) for r in shown] == [
            (reason.replace("_", " "), f"EUR {value:,.2f}")
            for reason, value in sorted(lost.items(), key=lambda item: -item[1])
        ]
        assert counted(client) == {"lost": before["lost"] + 3, "won_back": before["won_back"] + 1}
        assert text("#lost") == str(before["lost"] + 3)
        assert text("#won-back") == str(before["won_back"] + 1)
        assert text("#won-reasons tbody").startswith("staff attitude")
        by_store = {
            row["store_id"]: row
            for row in client.get(
                "/v1/reports/defection-rate",
                params={"from": str(month), "to": str(end), "by": "store"},
            ).json()["rows"]
        }
        for row in browser.find_elements(By.CSS_SELECTOR, "#stores tbody tr"):
            api_row = by_store[row.get_attribute("data-group")]
            rate = row.find_element(By.CSS_SELECTOR, ".rate-current").text
            assert rate == (
                "\u2013" if api_row["rate"] is None else f"{api_row['rate'] * 100:.1f}%"
            )
        chart = browser.execute_script(
            """const chart = Chart.getChart(document.getElementById('rate-chart'));
            return {labels: chart.data.labels, y: chart.options.scales.y.title.text,
                    ticks: chart.scales.y.ticks.map((t) => t.label)};"""
        )
        assert chart["labels"][-1].endswith("(so far)")
        assert len(chart["labels"]) == 13
        assert chart["y"] == "Defected (%)"
        assert all(tick.endswith("%") for tick in chart["ticks"])
        assert console_errors(browser) == []
        shoot(browser, "manager")

        # Each export is the reports API's CSV for the same span.
        with httpx.Client(base_url=url, timeout=10) as page:
            page.post("/ui/login", data={"key": key})
            exported = page.get("/ui/manager/reasons.csv")
            assert exported.headers["content-disposition"].startswith("attachment")
            same = client.get("/v1/reports/reasons", headers={"Accept": "text/csv"})
            assert exported.text == same.text
            assert next(csv.reader(io.StringIO(exported.text)))[0] == "reason"
            exported = page.get("/ui/manager/value-at-risk.csv")
            assert (
                exported.text
                == client.get("/v1/reports/value-at-risk", headers={"Accept": "text/csv"}).text
            )


def test_docs_are_served_from_the_service_alone(served_key: tuple[str, str], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = served_key
    browser.get(f"{url}/docs")
    WebDriverWait(browser, 30, poll_frequency=0.05).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 20
    )
    assert "/v1/purchases" in browser.find_element(By.TAG_NAME, "body").text
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    assert loaded
    assert all(name.startswith(url) for name in loaded), loaded
    assert console_errors(browser) == []
    shoot(browser, "docs")


def test_reasons_that_are_markup_show_as_text_and_never_run(tmp_path: Path, browser: Any) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def nothing_ran() -> None:
        with pytest.raises(TimeoutException):  # no alert() dialog opens
            WebDriverWait(browser, 0.5).until(ready.alert_is_present())
        assert browser.execute_script("return window.pwned") is None

    with serving(tmp_path, alert_reasons=orjson.dumps(HOSTILE_REASONS).decode()) as (url, key):
        lapse(url, {"Authorization": f"Bearer {key}"}, {"card-1": "50"})
        sign_in(browser, url, key, person='<img src=x onerror="window.pwned=1">')
        nothing_ran()
        reason = Select(
            browser.find_element(By.CSS_SELECTOR, "form[data-resolve] select[name=reason]")
        )
        assert [option.get_attribute("value") for option in reason.options][1:] == HOSTILE_REASONS

        # Recorded as the reason, it comes back into the manager's view: as text too.
        browser.find_element(By.CSS_SELECTOR, ".work-it summary").click()
        Select(browser.find_element(By.NAME, "outcome")).select_by_value("lost")
        reason.select_by_value(HOSTILE_REASONS[0])
        browser.find_element(By.CSS_SELECTOR, "form[data-resolve] button[type=submit]").click()
        browser.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
        WebDriverWait(browser, 30, poll_frequency=0.05).until(
            lambda d: "resolved as lost" in d.find_element(By.ID, "toast").text
        )
        browser.get(f"{url}/ui/manager")
        assert HOSTILE_REASONS[0] in browser.find_element(By.ID, "lost-reasons").text
        nothing_ran()
        browser.get(f"{url}/ui/customers/card-1")
        assert HOSTILE_REASONS[0] in browser.find_element(By.TAG_NAME, "main").text
        nothing_ran()


class Scripts(HTMLParser):
    """The page's <script> elements as the browser's parser sees them: attributes and text."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[dict[str, str | None], str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.found.append((dict(attrs), ""))

    def handle_data(self, data: str) -> None:
        if self.found and self.lasttag == "script":
            attributes, text = self.found[-1]
            self.found[-1] = (attributes, text + data)


def scripts(page: str) -> list[tuple[dict[str, str | None], str]]:
    parser = Scripts()
    parser.feed(page)
    parser.close()
    return parser.found


class Handlers(HTMLParser):
    """Inline event handler attributes (onclick=...): script a strict policy would block."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [f"{tag} {name}" for name, _ in attrs if name.startswith("on")]


def handlers(page: str) -> list[str]:
    parser = Handlers()
    parser.feed(page)
    parser.close()
    return parser.found


def policy(header: str) -> dict[str, list[str]]:
    """A Content-Security-Policy as {directive: sources}."""
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: sources for name, *sources in directives}


def test_every_page_runs_only_its_own_scripts_under_a_strict_policy(
    served_key: tuple[str, str],
) -> None:
    url, key = served_key
    with api(url, key) as client:
        lapse(url, {"Authorization": f"Bearer {key}"}, {"csp-a": "90"}, "csp")
        assert client.get("/").headers["location"] == "/ui/"
        with httpx.Client(base_url=url, timeout=10) as page:
            page.post("/ui/login", data={"key": key})
            for path in ("/ui/login", "/ui/", "/ui/customers/csp-a", "/ui/manager"):
                answer = page.get(path)
                assert answer.status_code == 200, path
                csp = policy(answer.headers["content-security-policy"])
                assert csp["default-src"] == ["'self'"]
                assert csp["script-src"] == ["'self'"]
                assert all("'unsafe-inline'" not in sources for sources in csp.values())
                assert (csp["object-src"], csp["base-uri"], csp["frame-ancestors"]) == (
                    ["'none'"],
                    ["'none'"],
                    ["'none'"],
                )
                found = scripts(answer.text)
                assert found, path
                assert all(
                    (attributes.get("src") or "").startswith("/ui/static/") and not text.strip()
                    for attributes, text in found
                ), path
                assert handlers(answer.text) == [], path
            for asset in ("/ui/static/app.js", "/ui/static/vendor/htmx/htmx.min.js"):
                answer = page.get(asset)
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("text/javascript")
                assert answer.headers["x-content-type-options"] == "nosniff"
