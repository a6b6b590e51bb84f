"""`radar import`: history files through the ingestion's own validation and deduplication."""

from __future__ import annotations

import csv
import gzip
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from fastapi import FastAPI

from app.cli import main
from app.imports.reader import ReadOptions, parse_mapping, read
from app.imports.service import ImportSummary, import_local, import_remote
from app.kit.settings import get_settings
from tests.conftest import Keys, ScoredTransport, stored_customers, stored_events

pytestmark = pytest.mark.anyio

CSV = """card,date,total,shop,type,dept
c-1,20260105,12.50,north,,bakery
c-1,20260112,8.00,north,,bakery
c-1,20260112,3.20,north,,coffee
c-2,20260106,40,south,,fuel
c-2,20260120,-15.00,south,,fuel
c-2,20260121,5.00,south,refund,
"""
MAPPED = ReadOptions(
    mapping=parse_mapping(
        "customer_id=card,occurred_at=date,amount=total,store_id=shop,kind=type,category=dept"
    ),
    date_format="yyyymmdd",
    default_currency="EUR",
)


async def run_import(app: FastAPI, path: Path, options: ReadOptions) -> ImportSummary:
    return await import_local(
        app.state.transactions, path, options, max_future_skew=timedelta(minutes=5)
    )


async def test_a_mapped_csv_is_stored_like_the_api_would(app: FastAPI, tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text(CSV)
    summary = await run_import(app, path, MAPPED)
    assert (summary.rows, summary.accepted, summary.duplicates, summary.rejected) == (6, 6, 0, 0)
    events = await stored_events(app)
    by_amount = {str(e["amount"]): e for e in events}
    assert by_amount["12.5"]["customer_id"] == "c-1"
    assert by_amount["12.5"]["occurred_at"].isoformat() == "2026-01-05T12:00:00+00:00"
    assert by_amount["12.5"]["items"] is not None
    assert by_amount["15"]["kind"] == "refund"  # a negative amount
    assert by_amount["5"]["kind"] == "refund"  # the kind column
    assert all(e["currency"] == "EUR" for e in events)
    customers = {c["customer_id"]: c for c in (await stored_customers(app))[:-1]}
    assert customers["c-1"]["visit_days"] == 2  # two rows on one day are one visit
    assert customers["c-2"]["refunds"] == 2
    assert set(customers["c-1"]["categories"]) == {"bakery", "coffee"}


async def test_importing_the_same_file_again_changes_nothing(app: FastAPI, tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    # Two identical rows are two purchases, and stay two on every run.
    path.write_text(CSV + "c-3,20260105,9.99,north,,bakery\nc-3,20260105,9.99,north,,bakery\n")
    first = await run_import(app, path, MAPPED)
    assert first.accepted == 8
    state = [*await stored_events(app), *await stored_customers(app)]
    again = await run_import(app, path, MAPPED)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 8, 0)
    assert [*await stored_events(app), *await stored_customers(app)] == state
    # The same rows in another order are still the same events.
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    shuffled = await run_import(app, path, MAPPED)
    assert (shuffled.accepted, shuffled.duplicates) == (0, 8)


async def test_json_lines_and_gzip(app: FastAPI, tmp_path: Path) -> None:
    events = [
        {
            "event_id": f"pos-{n}",
            "customer_id": "c-9",
            "store_id": "north",
            "occurred_at": f"2026-02-0{n}T10:00:00+01:00",
            "amount": "10",
            "currency": "EUR",
            "items": [{"category": "fuel", "amount": "10"}],
            "attributes": {"segment": "family"},
        }
        for n in range(1, 4)
    ]
    path = tmp_path / "history.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(orjson.dumps(e) for e in events)))
    summary = await run_import(app, path, ReadOptions())
    assert summary.accepted == 3
    stored = await stored_events(app)
    assert [e["event_id"] for e in stored] == ["pos-1", "pos-2", "pos-3"]
    (customer,) = (await stored_customers(app))[:-1]
    assert customer["segment"] == "family"


@pytest.mark.parametrize(
    ("line", "field", "code"),
    [
        ("c-1,2026-01-05,12.50,north,,bakery", "/occurred_at", "bad_date"),
        ("c-1,20260105,twelve,north,,bakery", "/amount", "bad_amount"),
        ("c-1,20260105,,north,,bakery", "/amount", "missing"),
        ("c-1,,12.50,north,,bakery", "/occurred_at", "missing"),
        (",20260105,12.50,north,,bakery", "/customer_id", "missing"),
        ("c-1,20260105,0,north,refund,bakery", "/amount", "greater_than"),
        ("c-1,20260105,1.23456,north,,bakery", "/amount", "decimal_max_places"),
        ("c-1,20990105,12.50,north,,bakery", "/occurred_at", "future_timestamp"),
        ("c-1,20260105,12.50,north", "", "wrong_column_count"),
        ("c-1,20260105,12.50,,,bakery", "/store_id", "missing"),
    ],
)
async def test_bad_rows_are_rejected_with_their_line_and_reason(
    app: FastAPI, tmp_path: Path, line: str, field: str, code: str
) -> None:
    path = tmp_path / "history.csv"
    good = "c-2,20260106,40,south,,fuel"
    path.write_text("\n".join([CSV.splitlines()[0], good, line, good.replace("06", "07")]) + "\n")
    summary = await run_import(app, path, MAPPED)
    assert summary.accepted == 2
    (reject,) = summary.rejects
    assert (reject.line, reject.pointer, reject.code) == (3, field, code)
    assert reject.raw == line
    assert len(await stored_events(app)) == 2  # the good rows around it are kept


async def test_bad_json_lines_and_bad_encodings(app: FastAPI, tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    good = orjson.dumps(
        {
            "customer_id": "c-1",
            "store_id": "s",
            "occurred_at": "2026-01-05",
            "amount": 5,
            "currency": "EUR",
        }
    )
    path.write_bytes(
        b"\n".join(
            [
                good,
                b"{not json",
                b"[1, 2]",
                b'{"customer_id": "caf\xe9"}',
                good.replace(b"EUR", b"XTS"),
            ]
        )
    )
    summary = await run_import(app, path, ReadOptions())
    assert summary.accepted == 1
    assert [(r.line, r.code) for r in summary.rejects] == [
        (2, "malformed_json"),
        (3, "not_an_object"),
        (4, "bad_encoding"),
        (5, "currency_not_money"),  # the API's own validation
    ]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("card,date,total,shop\nc-\xe9,20260105,3,north\n".encode("latin-1"))
    options = ReadOptions(
        mapping=parse_mapping("customer_id=card,occurred_at=date,amount=total,store_id=shop"),
        date_format="yyyymmdd",
        default_currency="EUR",
        encoding="latin-1",
    )
    assert (await run_import(app, latin, options)).accepted == 1
    assert "c-\xe9" in {e["customer_id"] for e in await stored_events(app)}


def test_whitespace_files_without_a_header(tmp_path: Path) -> None:
    path = tmp_path / "cdnow.txt"
    path.write_text(" 00001 19970101  1   11.77\n 00002 19970112  1   12.00\n")
    options = ReadOptions(
        delimiter="whitespace",
        header=False,
        columns=("customer_id", "date", "cds", "dollars"),
        mapping=parse_mapping("occurred_at=date,amount=dollars"),
        date_format="%Y%m%d",
        default_store="cdnow",
        default_currency="USD",
    )
    rows = list(read(path, options))
    assert [r.event["customer_id"] for r in rows if r.event] == ["00001", "00002"]
    assert rows[0].event is not None
    assert rows[0].event["occurred_at"] == "1997-01-01T12:00:00+00:00"


@pytest.mark.parametrize("text", ["customer_id", "nope=card", "customer_id=", "=card"])
def test_bad_mappings_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"field|column"):
        parse_mapping(text)


async def test_import_over_http_through_the_batch_endpoint(
    app: FastAPI, keys: Keys, tmp_path: Path
) -> None:
    path = tmp_path / "history.csv"
    path.write_text(CSV + "c-1,notadate,1,north,,x\n")
    transport = ScoredTransport(app=app)
    summary = await import_remote(
        "http://radar.test", keys.raw["ingest"], path, MAPPED, transport=transport
    )
    assert (summary.accepted, summary.rejected) == (6, 1)
    assert summary.rejects[0].line == 8
    again = await import_remote(
        "http://radar.test", keys.raw["ingest"], path, MAPPED, transport=transport
    )
    assert again.duplicates == 6
    local = await run_import(app, path, MAPPED)  # the same ids either way
    assert local.duplicates == 6


def test_the_command_reports_and_writes_rejects(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RADAR_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        path = tmp_path / "history.csv"
        unique = tmp_path.name[-12:]  # this test's rows only, whatever the database holds
        path.write_text(
            CSV.replace("c-", f"{unique}-") + f"{unique}-1,x,1,north,,y\n" + "@SUM(A1),x,1,n,,y\n"
        )
        rejects = tmp_path / "rejects.csv"
        args = [
            "import", str(path), "--map",
            "customer_id=card,occurred_at=date,amount=total,store_id=shop,kind=type,category=dept",
            "--date-format", "yyyymmdd", "--currency", "EUR", "--rejects", str(rejects), "--json",
        ]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        summary: dict[str, Any] = json.loads(result.stdout)
        assert summary["rejected"] == 2
        assert summary["rejects"][0] == {
            "line": 8,
            "field": "/occurred_at",
            "code": "bad_date",
            "message": "'x' is not a yyyymmdd date",
        }
        written = list(csv.reader(rejects.open(newline="")))
        assert written[1][0] == "8"
        assert written[2][5] == "'@SUM(A1),x,1,n,,y"  # the raw line, never run as a formula
        again = json.loads(CliRunner().invoke(main, args).stdout)
        assert (again["accepted"], again["duplicates"]) == (0, summary["accepted"])
        bad = CliRunner().invoke(main, ["import", str(path), "--map", "colour=x"])
        assert bad.exit_code == 2
        assert "unknown field 'colour'" in bad.output
    finally:
        get_settings.cache_clear()
