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
