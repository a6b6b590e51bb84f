"""Text from outside (a receiver's answer, an exception's message) made storable anywhere."""

from __future__ import annotations


def storable(text: str, limit: int) -> str:
    """At most `limit` characters that both databases store: PostgreSQL refuses NUL in text
    (it becomes U+FFFD) and UTF-8 cannot carry a lone surrogate (it becomes "?")."""
    cut = text[:limit].replace("\x00", "\ufffd")
    return cut.encode("utf-8", errors="replace").decode("utf-8")


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    """Text from clients (ids, raw lines) as a CSV cell a spreadsheet shows and never runs:
    one that could start a formula gets a leading '. Numbers the service writes are not
    passed through this, and stay numbers."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value
