from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.kit.settings import Settings


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///./var/x.db", "sqlite+aiosqlite:///./var/x.db"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_database_urls_are_mapped_to_the_async_drivers(given: str, expected: str) -> None:
    assert Settings(database_url=given).database_url == expected


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_unsupported_databases_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match=r"database_url|unsupported"):
        Settings(database_url=url)


def test_settings_come_from_radar_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADAR_MAX_FUTURE_SKEW", "PT10M")
    monkeypatch.setenv("RADAR_MAX_BATCH_EVENTS", "50")
    settings = Settings()
    assert settings.max_future_skew.total_seconds() == 600
    assert settings.max_batch_events == 50
    assert Settings().database_url.startswith("sqlite+aiosqlite:///")


def test_alert_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    monkeypatch.setenv("RADAR_ALERT_REASONS", '["price", "parking"]')
    monkeypatch.setenv("RADAR_ALERT_ESCALATE_AFTER", "PT6H")
    monkeypatch.setenv("RADAR_ALERT_FEED_RETENTION", "P30D")
    monkeypatch.setenv("RADAR_ALERT_WORKFLOW_SCOPE", "manage")
    settings = Settings()
    assert settings.alert_reasons == ["price", "parking"]
    assert settings.alert_escalate_after == timedelta(hours=6)
    assert settings.alert_feed_retention == timedelta(days=30)
    assert settings.alert_workflow_scope == "manage"


def test_an_empty_reason_list_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RADAR_ALERT_REASONS", "[]")
    with pytest.raises(ValidationError, match="alert_reasons"):
        Settings()


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("0", 0.0), ("90", 90.0), ("0.2", 0.2), ("PT5M", 300.0), ("P1D", 86400.0)],
)
def test_durations_take_iso_8601_or_seconds(
    monkeypatch: pytest.MonkeyPatch, given: str, seconds: float
) -> None:
    monkeypatch.setenv("RADAR_SWEEP_INTERVAL", given)
    assert Settings().sweep_interval.total_seconds() == seconds


def test_webhook_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import ipaddress

    monkeypatch.setenv("RADAR_WEBHOOK_RETRY_SCHEDULE", '["PT1S", 30, "0.5"]')
    monkeypatch.setenv("RADAR_WEBHOOK_ALLOWED_NETWORKS", '["10.1.0.0/16", "fd00::/8"]')
    settings = Settings()
    assert [d.total_seconds() for d in settings.webhook_retry_schedule] == [1.0, 30.0, 0.5]
    assert settings.webhook_allowed_networks == [
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RADAR_WEBHOOK_LEASE", "10"),  # not longer than the 15 s timeout
        ("RADAR_WEBHOOK_RETRY_SCHEDULE", "[]"),
        ("RADAR_WEBHOOK_ALLOWED_NETWORKS", '["10.1.2.3/8"]'),  # host bits set
        ("RADAR_WEBHOOK_TIMEOUT", "0"),
        ("RADAR_SWEEP_INTERVAL", "soon"),
    ],
)
def test_bad_webhook_settings_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_the_crm_link_needs_an_address_with_the_customer_id() -> None:
    link = "https://crm.example.com/cards/{customer_id}"
    assert Settings(crm_customer_url=link).crm_customer_url == link
    assert Settings(crm_customer_url="").crm_customer_url is None
    for bad in ("https://crm.example.com/cards/", "javascript:alert(1)//{customer_id}"):
        with pytest.raises(ValidationError, match="customer_id"):
            Settings(crm_customer_url=bad)
