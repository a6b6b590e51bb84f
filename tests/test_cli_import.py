"""`radar import` as a person runs it: a wrong mapping, a decimal comma, a service that is
down or refuses the key, a file nothing of which can be stored. Each failure is one line on
stderr and exit 1, and stores nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main
from app.imports.reader import ReadOptions, read
from app.kit.settings import get_settings
from tests.test_cli import _fails_in_one_line, fails_in_one_line
from tests.test_server import RADAR, _free_port, serving

MAPPED = ["--map", "customer_id=card,occurred_at=day,amount=total", "--store", "s-1"]
HISTORY = "card,day,total\nc-1,2026-01-05,10\nc-1,2026-01-12,12.50\nc-2,2026-01-06,30\n"


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "cli.db"
    monkeypatch.setenv("RADAR_DATABASE_URL", f"sqlite:///{path}")
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def _file(tmp_path: Path, text: str, name: str = "history.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "args", "says"),
    [
        (
            HISTORY,
            ["--map", "customer_id=card,occurred_at=day,amount=price", "--store", "s-1"],
            "the file has no column 'price' (mapped to amount); its columns: card, day, total. "
            "Use --map amount=COLUMN",
        ),
        (
            HISTORY,
            ["--map", "customer_id=card,occurred_at=day", "--store", "s-1"],
            "the file has no column 'amount'; its columns: card, day, total",
        ),
        (
            "card,day,total,shop\nc-1,2026-01-05,10,north\nc-2,2026-01-06,12,south\n",
            ["--map", "customer_id=card,occurred_at=day,amount=shop", "--store", "s-1"],
            "stopped before importing: the first 2 rows are all rejected, 2 on amount "
            "(line 2: 'north' is not a number); check --map amount=COLUMN and --decimal",
        ),
        (
            HISTORY,
            ["--map", "customer_id=card,occurred_at=total,amount=day", "--store", "s-1"],
            "stopped before importing: the first 3 rows are all rejected, 3 on occurred_at "
            "(line 2: '10' is not a ISO 8601 date); check --map occurred_at=COLUMN and "
            "--date-format",
        ),
        (
            HISTORY,
            [*MAPPED, "--date-format", "dd/mm/yyyy"],
            "3 on occurred_at (line 2: '2026-01-05' is not a dd/mm/yyyy date)",
        ),
        (
            "card;day;total\nc-1;2026-01-05;42,50\n",
            [*MAPPED, "--delimiter", ";"],
            "1 on amount (line 2: '42,50' is not a number (a decimal comma? give --decimal ,))",
        ),
        (
            "card,day,total\nc-1,2026-01-05,42.50\n",
            [*MAPPED, "--decimal", ","],
            "--decimal , needs another CSV delimiter than the comma: add --delimiter ';'",
        ),
    ],
    ids=[
        "mapped-column-missing",
        "field-without-column",
        "amount-holds-text",
        "time-is-not-a-time",
        "wrong-date-format",
        "decimal-comma-unannounced",
        "decimal-comma-with-comma-delimiter",
    ],
)
def test_a_wrong_mapping_stops_before_anything_is_stored(
    database: Path, tmp_path: Path, text: str, args: list[str], says: str
) -> None:
    line = fails_in_one_line(["import", _file(tmp_path, text), *args])
    assert says in line
    assert not database.exists()  # stopped before the database was even opened


def test_a_mapping_wrong_past_the_first_rows_is_still_a_failure(
    database: Path, tmp_path: Path
) -> None:
    """Rows the first-rows check cannot see fail (here: all in the future), and a file of
    which nothing is stored exits 1 after its summary."""
    rows = "".join(f"c-{n},2999-01-{n % 28 + 1:02},10\n" for n in range(30))
    path = _file(tmp_path, "card,day,total\n" + rows)
    result = CliRunner().invoke(main, ["import", path, *MAPPED])
    assert result.exit_code == 1, result.output
    assert "30 rows in" in result.stdout
    assert "0 accepted" in result.stdout
    assert result.stderr.startswith(
        "Error: all 30 rows were rejected, nothing was imported (line 2"
    )
    assert result.stderr.count("\n") == 1


def test_decimal_commas(database: Path, tmp_path: Path) -> None:
    text = "card;day;total\nc-1;2026-01-05;42,50\nc-1;2026-01-12;1.234,5\nc-2;2026-01-06;-3,10\n"
    path = Path(_file(tmp_path, text))
    options = ReadOptions(
        mapping={"customer_id": "card", "occurred_at": "day", "amount": "total"},
        delimiter=";",
        decimal=",",
    )
    events = [row.event for row in read(path, options)]
    assert [(e["amount"], e["kind"]) for e in events if e] == [
        ("42.50", "purchase"),
        ("1234.5", "purchase"),
        ("3.10", "refund"),
    ]
    imported = CliRunner().invoke(
        main, ["import", str(path), *MAPPED, "--delimiter", ";", "--decimal", ",", "--json"]
    )
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["accepted"] == 3
    # With a decimal comma announced, a point is a mistake, not a thousands separator.
    pointed = Path(_file(tmp_path, "card;day;total\nc-1;2026-01-05;42.50\n", "pointed.csv"))
    (row,) = read(pointed, options)
    assert row.error is not None
    assert row.error.message == "'42.50' has a point, but --decimal , was given"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`radar serve` on a fresh SQLite file: its URL, and the keys by scope."""
    with serving(tmp_path / "served.db", {"ingest": ["ingest"], "read": ["read"]}) as served:
        yield served


def test_importing_to_a_service_that_refuses_or_is_away(
    service: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, keys = service
    path = _file(tmp_path, HISTORY)
    args = ["import", path, *MAPPED, "--currency", "EUR", "--url", url]
    forbidden = _fails_in_one_line([*args, "--key", keys["read"]], {})
    assert forbidden == (
        f"Error: the key lacks the ingest scope (403 from {url}): create one with "
        "`radar keys create --name NAME --scope ingest`"
    )
    # The other refusals in this process (a real one above and below).
    unknown = fails_in_one_line([*args, "--key", keys["read"][:-2] + "xx"])
    assert f"the service at {url} does not know the key (401)" in unknown
    closed = f"http://127.0.0.1:{_free_port()}"
    away = fails_in_one_line(["import", path, *MAPPED, "--url", closed, "--key", "rk_x"])
    assert away.startswith(f"Error: cannot reach the service at {closed} (ConnectError: ")
    assert away.endswith("is it running, and is --url right?")
    sent = subprocess.run(
        [RADAR, *args, "--key", keys["ingest"], "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["accepted"] == 3
