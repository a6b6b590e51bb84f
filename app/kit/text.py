"""Text from outside (a receiver's answer, an exception's message) made storable anywhere."""

from __future__ import annotations


def storable(text: str, limit: int) -> str:
    """At most `limit` characters that both databases store: PostgreSQL refuses NUL in text
    (it becomes U+FFFD) and UTF-8 cannot carry a lone surrogate (it becomes "?")."""
    cut = text[:limit].replace("\x00", "\ufffd")
    return cut.encode("utf-8", errors="replace").decode("utf-8")
