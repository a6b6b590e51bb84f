"""The dashboard in a real browser: headless Chromium clicks acknowledge and resolve."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from tests.test_server import RADAR, _free_port, _wait_until_healthy

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


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


def test_the_dashboard_lists_alerts_and_works_them_with_clicks(
    tmp_path: Path, browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    assert isinstance(browser, WebDriver)
    env = {**os.environ, "RADAR_DATABASE_URL": f"sqlite:///{tmp_path / 'radar.db'}"}
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
    headers = {"Authorization": f"Bearer {key}"}
    try:
        _wait_until_healthy(url, server)
        # Two customers who came every week for twelve weeks, then stopped months ago.
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
            for customer, amount in (("card-big", "90"), ("card-small", "9"))
            for n in range(12)
        ]
        stored = httpx.post(
            f"{url}/v1/purchases/batch", json={"events": events}, headers=headers, timeout=10
        )
        assert stored.json()["accepted"] == 24
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
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.anyio
async def test_the_page_offers_the_configured_reasons_and_locks_itself_down(
    settings: object,
) -> None:
    from asgi_lifespan import LifespanManager

    from app.kit.settings import Settings
    from app.main import create_app

    assert isinstance(settings, Settings)
    app = create_app(settings.model_copy(update={"alert_reasons": ["parking", "price"]}))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://radar.test") as client:
            root = await client.get("/")
            assert (root.status_code, root.headers["location"]) == (307, "/ui/")
            page = await client.get("/ui/")
    assert page.status_code == 200
    assert 'const REASONS = ["parking","price"];' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
