"""Reading purchase history files: CSV or JSON Lines, plain or gzip, into API-shaped events.

Each row becomes the same dictionary a POS would POST, so that the ingestion's own
validation, deduplication and pattern updates apply to it unchanged; this module only maps
columns and formats (dates like `yyyymmdd`, refunds as negative amounts, default store and
currency) and gives every row a stable `event_id` when the file has none.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from itertools import islice
from pathlib import Path
from typing import IO, Any, Literal, cast
from zoneinfo import ZoneInfo

import orjson

Format = Literal["csv", "jsonl"]
# The API's fields a column can be mapped onto.
FIELDS = (
    "event_id",
    "customer_id",
    "store_id",
    "occurred_at",
    "amount",
    "currency",
    "kind",
    "refunds_event_id",
    "staff_id",
    "category",
    "segment",
)
# Date formats by the names people use, besides any strftime pattern.
DATE_FORMATS = {
    "yyyymmdd": "%Y%m%d",
    "yyyy-mm-dd": "%Y-%m-%d",
    "dd/mm/yyyy": "%d/%m/%Y",
    "mm/dd/yyyy": "%m/%d/%Y",
    "dd.mm.yyyy": "%d.%m.%Y",
}
REFUND_WORDS = frozenset({"refund", "return", "r", "credit"})


class RowError(ValueError):
    """A row that cannot become an event: (field, code, message)."""

    def __init__(self, name: str, code: str, message: str) -> None:
        super().__init__(message)
        self.name, self.code, self.message = name, code, message


@dataclass(frozen=True)
class ReadOptions:
    format: Format | None = None  # None: from the file name (.csv, .tsv, .jsonl, .ndjson)
    mapping: dict[str, str] = field(default_factory=dict)  # API field -> column
    delimiter: str = ","  # "whitespace": runs of spaces and tabs
    decimal: str = "."  # the amounts' decimal mark: "." or "," (then "." groups thousands)
    header: bool = True
    columns: tuple[str, ...] = ()  # names of the columns of a file without a header
    date_format: str | None = None  # None: ISO 8601 / RFC 3339
    timezone: str = "UTC"  # for dates and times without an offset
    default_store: str | None = None
    default_currency: str | None = None
    encoding: str = "utf-8"

    @functools.cached_property
    def columns_of(self) -> dict[str, str]:
        """The column each API field is read from (its own name unless mapped)."""
        return {name: self.mapping.get(name, name) for name in FIELDS}


def parse_mapping(text: str) -> dict[str, str]:
    """`customer_id=card,occurred_at=date` -> {"customer_id": "card", ...}."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        target, sep, source = part.partition("=")
        if not sep or not source.strip():
            raise ValueError(f"{part!r} is not field=column")
        if target.strip() not in FIELDS:
            raise ValueError(f"unknown field {target.strip()!r}; fields: {', '.join(FIELDS)}")
        mapping[target.strip()] = source.strip()
    return mapping


@dataclass(slots=True)
class Row:
    line: int
    raw: str  # the row as read, for the rejects file
    event: dict[str, Any] | None = None
    error: RowError | None = None


def read(path: Path, options: ReadOptions, position: list[int] | None = None) -> Iterator[Row]:
    """Every data row of the file, as an API-shaped event or the reason it cannot be one.
    `position[0]` follows how many bytes of the file were read (for a progress bar)."""
    kind = options.format or detect_format(path)
    _check_decimal(kind, options)
    occurrences: Counter[bytes] = Counter()
    with path.open("rb", buffering=0) as raw_file, open_binary(raw_file) as handle:
        lines = _lines(handle, options.encoding)
        records = _csv_records(lines, options) if kind == "csv" else _json_records(lines)
        for line, raw, record in records:
            row = Row(line, raw)
            try:
                if isinstance(record, RowError):
                    raise record
                row.event = to_event(record, options)
                if "event_id" not in row.event:
                    row.event["event_id"] = _stable_id(raw, occurrences)
            except RowError as exc:
                row.error = exc
            if position is not None:
                position[0] = raw_file.tell()
            yield row


REQUIRED = ("customer_id", "occurred_at", "amount")


def _check_decimal(kind: Format, options: ReadOptions) -> None:
    if kind == "csv" and options.decimal == "," and options.delimiter == ",":
        raise ValueError(
            "--decimal , needs another CSV delimiter than the comma: add --delimiter ';' (or tab)"
        )


def check_columns(path: Path, options: ReadOptions, sample: int = 20) -> None:
    """Raise ValueError (one line) when the mapping names a column the file does not have,
    or a field the events need has no column: before any row is imported."""
    kind = options.format or detect_format(path)
    _check_decimal(kind, options)
    fields = [*options.mapping, *(f for f in REQUIRED if f not in options.mapping)]
    names: set[str] = set()
    if kind == "csv":
        header = list(options.columns) or _header(path, options)
        names, shown = set(header), ", ".join(header)
    else:
        with path.open("rb") as raw_file, open_binary(raw_file) as handle:
            for _, _, record in islice(_json_records(_lines(handle, options.encoding)), sample):
                if isinstance(record, dict):
                    names.update(record)
        shown = ", ".join(sorted(names))
    for name in fields:
        column = options.columns_of[name]
        if column not in names:
            mapped = f" (mapped to {name})" if name in options.mapping else ""
            raise ValueError(
                f"the file has no column {column!r}{mapped}; its columns: {shown or 'none'}. "
                f"Use --map {name}=COLUMN"
            )


def _header(path: Path, options: ReadOptions) -> list[str]:
    with path.open("rb") as raw_file, open_binary(raw_file) as handle:
        for text in _lines(handle, options.encoding):
            if isinstance(text, RowError):
                raise ValueError(f"the header is {text.message}: give --encoding")
            if text.strip():
                return [cell.strip() for cell in _split(text, options.delimiter)]
    return []


def detect_format(path: Path) -> Format:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    if last in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if last in (".csv", ".tsv", ".txt"):
        return "csv"
    raise ValueError(f"cannot tell the format of {path.name}: use --format csv or jsonl")


def open_binary(raw_file: IO[bytes]) -> IO[bytes]:
    """The file's bytes, gunzipped when it starts with gzip's magic bytes."""
    zipped = raw_file.read(2) == b"\x1f\x8b"
    raw_file.seek(0)
    if zipped:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw_file, mode="rb"))
    return io.BufferedReader(cast(io.RawIOBase, raw_file))


def _csv_records(
    lines: Iterator[str | RowError], options: ReadOptions
) -> Iterator[tuple[int, str, dict[str, str] | RowError]]:
    names: list[str] | None = list(options.columns) or None
    for line, text in enumerate(lines, start=1):
        if isinstance(text, RowError):
            yield line, "", text
            continue
        if not text.strip():
            continue
        cells = _split(text, options.delimiter)
        if names is None:
            if not options.header:
                raise ValueError("a file without a header needs --columns")
            names = [cell.strip() for cell in cells]
            continue
        if len(cells) != len(names):
            error = RowError(
                "", "wrong_column_count", f"has {len(cells)} columns, the header {len(names)}"
            )
            yield line, text, error
            continue
        yield line, text, dict(zip(names, (c.strip() for c in cells), strict=True))


def _lines(handle: IO[bytes], encoding: str) -> Iterator[str | RowError]:
    """Each line as text, or why it is not text in that encoding (that line only)."""
    for number, data in enumerate(handle, start=1):
        if number == 1 and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]  # a UTF-8 byte order mark
        try:
            yield data.decode(encoding).rstrip("\r\n")
        except UnicodeDecodeError as exc:
            yield RowError(
                "", "bad_encoding", f"not {encoding} text ({exc.reason} at byte {exc.start})"
            )


def _split(text: str, delimiter: str) -> list[str]:
    if delimiter == "whitespace":
        return text.split()
    return next(csv.reader([text], delimiter=delimiter))


def _json_records(
    lines: Iterator[str | RowError],
) -> Iterator[tuple[int, str, dict[str, Any] | RowError]]:
    for line, text in enumerate(lines, start=1):
        if isinstance(text, RowError):
            yield line, "", text
            continue
        if not text.strip():
            continue
        try:
            record = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield line, text, RowError("", "malformed_json", f"not JSON: {exc}")
            continue
        if not isinstance(record, dict):
            yield line, text, RowError("", "not_an_object", "each line must be a JSON object")
            continue
        yield line, text, record


def to_event(record: dict[str, Any], options: ReadOptions) -> dict[str, Any]:
    """Map one record onto the API's event fields."""
    columns = options.columns_of
    event: dict[str, Any] = {}
    for name in _COPIED:
        found = record.get(columns[name])
        if found is not None and found != "":
            event[name] = str(found)
    if "store_id" not in event and options.default_store is not None:
        event["store_id"] = options.default_store
    if "currency" not in event and options.default_currency is not None:
        event["currency"] = options.default_currency
    event["occurred_at"] = _timestamp(record.get(columns["occurred_at"]), options)
    amount, refund = _amount(record.get(columns["amount"]), options.decimal)
    event["amount"] = amount
    event["kind"] = "refund" if refund or _is_refund(record.get(columns["kind"])) else "purchase"
    category = record.get(columns["category"])
    if category is not None and category != "":
        event["items"] = [{"category": str(category), "amount": amount}]
    elif isinstance(record.get("items"), list):
        event["items"] = record["items"]
    segment = record.get(columns["segment"])
    if segment is not None and segment != "":
        event["attributes"] = {"segment": str(segment)}
    elif isinstance(record.get("attributes"), dict):
        event["attributes"] = record["attributes"]
    return event


_COPIED = ("event_id", "customer_id", "store_id", "currency", "refunds_event_id", "staff_id")


def _timestamp(raw: Any, options: ReadOptions) -> str:
    if raw is None or raw == "":
        raise RowError("occurred_at", "missing", "no date in the row")
    return _parse_time(str(raw).strip(), options.date_format, options.timezone)


@functools.lru_cache(maxsize=65536)  # histories repeat their days: parse each once
def _parse_time(text: str, date_format: str | None, timezone: str) -> str:
    zone: tzinfo = UTC if timezone == "UTC" else ZoneInfo(timezone)
    pattern = DATE_FORMATS.get(date_format or "", date_format)
    try:
        if pattern is not None:
            parsed = datetime.strptime(text, pattern)
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            parsed = datetime.combine(date.fromisoformat(text), time(12))
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        expected = date_format or "ISO 8601"
        raise RowError("occurred_at", "bad_date", f"{text!r} is not a {expected} date") from exc
    if pattern is not None and parsed.time() == time(0) and "%H" not in pattern:
        parsed = parsed.replace(hour=12)  # a day without a time: its middle, any zone
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.isoformat()


_GROUPED_BY_POINTS = re.compile(r"[-+]?\d{1,3}(?:\.\d{3})+(?:,\d*)?")


def _amount(raw: Any, decimal: str = ".") -> tuple[str, bool]:
    """The amount as the API wants it (positive) and whether it was negative (a refund)."""
    if raw is None or raw == "":
        raise RowError("amount", "missing", "no amount in the row")
    text = str(raw).strip().replace(" ", "").replace("\u00a0", "")
    if decimal == "," and isinstance(raw, str):
        if _GROUPED_BY_POINTS.fullmatch(text):
            text = text.replace(".", "")  # 1.234,50
        elif "." in text:
            raise RowError(
                "amount", "bad_amount", f"{raw!r} has a point, but --decimal , was given"
            )
        text = text.replace(",", ".")
    try:
        number = Decimal(text)
    except InvalidOperation as exc:
        hint = " (a decimal comma? give --decimal ,)" if "," in text and decimal == "." else ""
        raise RowError("amount", "bad_amount", f"{raw!r} is not a number{hint}") from exc
    return format(abs(number), "f"), number < 0


def _is_refund(raw: Any) -> bool:
    return raw is not None and str(raw).strip().lower() in REFUND_WORDS


def _stable_id(raw: str, occurrences: Counter[bytes]) -> str:
    """The same row gets the same id on every run, wherever it sits in the file; identical
    rows are told apart by how many came before them."""
    digest = hashlib.blake2b(raw.strip().encode(), digest_size=12).digest()
    occurrences[digest] += 1
    return f"import:{digest.hex()}:{occurrences[digest]}"
