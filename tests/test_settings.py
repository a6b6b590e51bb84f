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
