"""The dashboard in a real browser: headless Chromium clicks acknowledge and resolve."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path

import httpx
import orjson
import pytest

from tests.test_server import RADAR, _free_port, _wait_until_healthy

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Reasons an operator might configure that are markup or script: they must show as text.
HOSTILE_REASONS = [
    "</script><script>alert(1)</script>",
    '"; alert(1); "',
    '<img src=x onerror="window.pwned=1">',
    "<!--",
]


@pytest.fixture
def browser() -> Iterator[object]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        message = "Chromium and ChromeDriver are needed (Debian: chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def serving(directory: Path, **settings: str) -> Iterator[tuple[str, str]]:
    """`radar serve` on a fresh SQLite file (RADAR_* settings as keywords): its URL and a
    key with the ingest and read scopes, named maria."""
    env = {
        **os.environ,
        "RADAR_DATABASE_URL": f"sqlite:///{directory / 'radar.db'}",
        **{f"RADAR_{name.upper()}": value for name, value in settings.items()},
    }
    key = (
        subprocess.run(
            [RADAR, "keys", "create", "--name", "maria", "--scope", "ingest", "--scope", "read"],
            env=env,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [RADAR, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_healthy(url, server)
        yield url, key
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def lapse(url: str, headers: dict[str, str], amounts: dict[str, str]) -> None:
    """Customers who came every week for twelve weeks, then stopped months ago."""
    first = date.today() - timedelta(weeks=30)
    events = [
        {
            "event_id": f"{customer}-{n}",
            "customer_id": customer,
            "store_id": "north",
            "occurred_at": f"{first + timedelta(weeks=n)}T12:00:00Z",
            "amount": amount,
            "currency": "EUR",
        }
        for customer, amount in amounts.items()
        for n in range(12)
    ]
    stored = httpx.post(
        f"{url}/v1/purchases/batch", json={"events": events}, headers=headers, timeout=10
    )
    assert stored.json()["accepted"] == len(events)
    # The scorer folds them (and opens the alerts) moments after the answer: wait for it, as
    # a client reading its own writes would, on `pending_events`.
    deadline = time.monotonic() + 10
    for customer in amounts:
        while True:
            view = httpx.get(f"{url}/v1/customers/{customer}", headers=headers, timeout=10)
            if view.status_code == 200 and view.json()["pending_events"] == 0:
                break
            assert time.monotonic() < deadline, view.text
            time.sleep(0.02)


def test_the_dashboard_lists_alerts_and_works_them_with_clicks(
    tmp_path: Path, browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    assert isinstance(browser, WebDriver)
    with serving(tmp_path) as (url, key):
        headers = {"Authorization": f"Bearer {key}"}
        lapse(url, headers, {"card-big": "90", "card-small": "9"})
        alerts = httpx.get(f"{url}/v1/alerts", headers=headers, timeout=10).json()["items"]
        assert [a["customer_id"] for a in alerts] == ["card-big", "card-small"]

        browser.get(f"{url}/")  # redirects to /ui/
        wait = WebDriverWait(browser, 15)
        browser.find_element(By.ID, "key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "#connect button").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")) == 2)
        rows = browser.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")
        assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == ["card-big", "card-small"]

        rows[0].find_element(By.CSS_SELECTOR, "button.acknowledge").click()
        wait.until(
            ready.text_to_be_present_in_element(
                (By.CSS_SELECTOR, "#alerts tbody tr td.status"), "acknowledged"
            )
        )
        big = httpx.get(f"{url}/v1/alerts/{alerts[0]['id']}", headers=headers, timeout=10).json()[
            "alert"
        ]
        assert (big["status"], big["acknowledged_by"]) == ("acknowledged", "maria")

        row = browser.find_element(By.CSS_SELECTOR, f"tr[data-alert-id='{alerts[1]['id']}']")
        outcome, reason = row.find_elements(By.TAG_NAME, "select")
        Select(outcome).select_by_value("lost")
        Select(reason).select_by_value("wait_time")
        row.find_element(By.CSS_SELECTOR, "button.resolve").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")) == 1)
        small = httpx.get(f"{url}/v1/alerts/{alerts[1]['id']}", headers=headers, timeout=10).json()[
            "alert"
        ]
        assert (small["status"], small["resolution"], small["reason"]) == (
            "resolved",
            "lost",
            "wait_time",
        )
        # The reasons chart shows the reason just recorded.
        wait.until(ready.text_to_be_present_in_element((By.ID, "reasons"), "wait time"))
        assert browser.find_element(By.ID, "error").text == ""


def test_reasons_that_are_markup_show_as_text_and_never_run(
    tmp_path: Path, browser: object
) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    assert isinstance(browser, WebDriver)

    def nothing_ran() -> None:
        with pytest.raises(TimeoutException):  # no alert() dialog opens
            WebDriverWait(browser, 0.5).until(ready.alert_is_present())
        assert browser.execute_script("return window.pwned") is None

    with serving(tmp_path, alert_reasons=orjson.dumps(HOSTILE_REASONS).decode()) as (url, key):
        lapse(url, {"Authorization": f"Bearer {key}"}, {"card-1": "50"})
        browser.get(f"{url}/ui/")
        wait = WebDriverWait(browser, 15)
        browser.find_element(By.ID, "key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "#connect button").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")) == 1)
        nothing_ran()
        outcome, reason = browser.find_elements(By.CSS_SELECTOR, "#alerts tbody tr select")
        assert [option.text for option in Select(reason).options] == HOSTILE_REASONS

        # Recorded as the reason, it comes back from the API into the chart: as text too.
        Select(outcome).select_by_value("lost")
        Select(reason).select_by_value(HOSTILE_REASONS[0])
        browser.find_element(By.CSS_SELECTOR, "button.resolve").click()
        wait.until(ready.text_to_be_present_in_element((By.ID, "reasons"), HOSTILE_REASONS[0]))
        nothing_ran()
        assert browser.find_element(By.ID, "error").text == ""
        assert browser.title == "Defection Radar"


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


def policy(header: str) -> dict[str, list[str]]:
    """A Content-Security-Policy as {directive: sources}."""
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: sources for name, *sources in directives}


async def fetch_dashboard(settings: object, reasons: list[str]) -> dict[str, httpx.Response]:
    from asgi_lifespan import LifespanManager

    from app.kit.settings import Settings
    from app.main import create_app

    assert isinstance(settings, Settings)
    app = create_app(settings.model_copy(update={"alert_reasons": reasons}))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as client:
            return {path: await client.get(path) for path in ("/", "/ui/", "/ui/app.js")}


@pytest.mark.anyio
async def test_the_page_offers_the_configured_reasons_and_locks_itself_down(
    settings: object,
) -> None:
    answers = await fetch_dashboard(settings, ["parking", "price"])
    root, page = answers["/"], answers["/ui/"]
    assert (root.status_code, root.headers["location"]) == (307, "/ui/")
    assert page.status_code == 200
    config = [text for attributes, text in scripts(page.text) if attributes.get("id")]
    assert [orjson.loads(text) for text in config] == [{"reasons": ["parking", "price"]}]
    csp = policy(page.headers["content-security-policy"])
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]  # no 'unsafe-inline': the page runs no inline script
    assert (csp["object-src"], csp["base-uri"], csp["frame-ancestors"]) == (
        ["'none'"],
        ["'none'"],
        ["'none'"],
    )
    assert all("'unsafe-inline'" not in sources for sources in csp.values())
    script = answers["/ui/app.js"]
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    assert 'getElementById("radar-config")' in script.text


@pytest.mark.anyio
async def test_reasons_reach_the_page_as_data_that_cannot_break_out_of_its_block(
    settings: object,
) -> None:
    page = (await fetch_dashboard(settings, HOSTILE_REASONS))["/ui/"].text
    # What the browser's parser finds: the page's own script, by address, and one JSON data
    # block that reads back as the reasons; no element or script made of a reason.
    found = scripts(page)
    assert [attributes for attributes, _ in found] == [
        {"src": "/ui/app.js", "defer": None},
        {"type": "application/json", "id": "radar-config"},
    ]
    assert orjson.loads(found[1][1]) == {"reasons": HOSTILE_REASONS}
    assert "<script>alert(1)" not in page
    assert "<img" not in page
