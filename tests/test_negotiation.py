"""Reports answer CSV only when the Accept header prefers it (RFC 9110, section 12.5.1)."""

from __future__ import annotations

import pytest

from app.kit.negotiation import prefers_csv


@pytest.mark.parametrize(
    ("accept", "csv"),
    [
        (None, False),
        ("", False),
        ("*/*", False),  # says nothing: JSON, the default
        ("application/json", False),
        ("text/csv", True),
        ("TEXT/CSV", True),  # media types are case-insensitive
        ("text/csv; charset=utf-8", True),
        ("text/csv, */*", True),
        ("application/json, text/csv", True),  # equally good: the one asked for by name
        ("text/csv;q=0, application/json", False),  # q=0: not acceptable
        ("text/csv;q=0.5, application/json;q=0.9", False),
        ("text/csv;q=0.9, application/json;q=0.5", True),
        ("text/csv;q=0.9, */*;q=0.5", True),
        ("text/*", False),
        ("text/csv;q=abc", False),  # a malformed quality: the range is left out
        ("text/csv;q=2", False),
        ("text/plain, text/html", False),
    ],
)
def test_csv_only_when_preferred(accept: str | None, csv: bool) -> None:
    assert prefers_csv(accept) is csv
