"""Reading an `Accept` header: does the client prefer CSV to JSON?

Written here rather than taken from a library: the reports need one decision between two
types, about twenty lines of RFC 9110 section 12.5.1, and the libraries that parse `Accept`
(python-mimeparse, werkzeug's) would be a dependency for this one function.
"""

from __future__ import annotations

CSV = "text/csv"
JSON = "application/json"


def _ranges(accept: str) -> list[tuple[str, float]]:
    """Each media range (lower case: media types are case-insensitive) with its quality; a
    range with a malformed q is left out."""
    found = []
    for part in accept.split(","):
        kind, *parameters = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = -1.0
        if kind and 0 <= quality <= 1:
            found.append((kind.lower(), quality))
    return found


def _quality(ranges: list[tuple[str, float]], media: str) -> tuple[float, int]:
    """The quality of the most specific range that matches `media`, and how specific it is
    (2: the type itself, 1: type/*, 0: */*); (0, -1) when none does."""
    family = media.split("/")[0] + "/*"
    best = (0.0, -1)
    for kind, quality in ranges:
        specific = 2 if kind == media else 1 if kind == family else 0 if kind == "*/*" else -1
        if specific > best[1]:
            best = (quality, specific)
    return best


def prefers_csv(accept: str | None) -> bool:
    """CSV when the client names text/csv as acceptable (q > 0) and JSON no better; JSON
    otherwise, and when the header says nothing (`*/*` or none)."""
    ranges = _ranges(accept or "")
    csv_quality, csv_specific = _quality(ranges, CSV)
    json_quality, _ = _quality(ranges, JSON)
    return csv_specific == 2 and csv_quality > 0 and csv_quality >= json_quality
