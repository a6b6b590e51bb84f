from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from app.cli import main
from app.kit.cli_errors import TRACEBACK_VARIABLE, one_line
from app.kit.settings import get_settings
from tests.radar_process import RADAR
from tests.test_server import _free_port, create_keys


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("RADAR_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_keys_create_list_revoke(runner: CliRunner) -> None:
    assert runner.invoke(main, ["migrate"]).exit_code == 0
    created = runner.invoke(main, ["keys", "create", "--name", "till-12", "--scope", "ingest"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("rk_")
    assert "cannot be shown again" in created.stderr
    prefix = key[: len("rk_") + 8]

    listed = runner.invoke(main, ["keys", "list"])
    assert f"{prefix}\ttill-12\tingest\tnever" in listed.stdout
    assert key not in listed.stdout

    assert runner.invoke(main, ["keys", "revoke", prefix]).exit_code == 0
    assert prefix not in runner.invoke(main, ["keys", "list"]).stdout
    assert "revoked" in runner.invoke(main, ["keys", "list", "--all"]).stdout


def test_keys_create_refuses_an_unknown_scope(runner: CliRunner) -> None:
    result = runner.invoke(main, ["keys", "create", "--name", "x", "--scope", "root"])
    assert result.exit_code == 2
    assert "root" in result.output


def test_revoking_an_unknown_key_fails(runner: CliRunner) -> None:
    result = runner.invoke(main, ["keys", "revoke", "rk_00000000"])
    assert result.exit_code != 0


def test_openapi_to_stdout(runner: CliRunner) -> None:
    result = runner.invoke(main, ["openapi"])
    assert json.loads(result.stdout)["info"]["title"] == "Defection Radar"


def test_serve_refuses_several_workers_on_sqlite(runner: CliRunner) -> None:
    result = runner.invoke(main, ["serve", "--workers", "2"])
    assert result.exit_code == 2
    assert "single-node" in result.output


def test_import_then_scores_as_of_a_day(runner: CliRunner, tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    history.write_text(
        "customer_id,occurred_at,amount\n"
        "c-1,2026-01-05,10\nc-1,2026-01-12,12\nc-2,2026-01-06,30\nc-3,2026-03-01,5\n"
        "=1+2,2026-01-07,8\n"  # an id a spreadsheet would run as a formula
    )
    imported = runner.invoke(
        main, ["import", str(history), "--store", "s-1", "--currency", "EUR", "--json"]
    )
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["accepted"] == 5
    out = tmp_path / "scores.csv"
    result = runner.invoke(main, ["scores", "--as-of", "2026-02-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "scored 3 customers as of 2026-02-01" in result.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("as_of,horizon_days,model,customer_id,")
    assert [line.split(",")[3] for line in lines[1:]] == ["'=1+2", "c-1", "c-2"]
    bad = runner.invoke(main, ["scores", "--as-of", "yesterday"])
    assert bad.exit_code == 2


def test_score_once_folds_what_is_queued(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = tmp_path / "history.csv"
    history.write_text("customer_id,occurred_at,amount\nc-1,2026-01-05,10\nc-1,2026-01-12,12\n")
    imported = runner.invoke(main, ["import", str(history), "--store", "s-1", "--json"])
    assert imported.exit_code == 0, imported.output
    # The import folds what it stores: nothing is left for the scorer.
    result = runner.invoke(main, ["score", "--once"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "scored 0 events"
    monkeypatch.setenv("RADAR_SWEEP_INTERVAL", "0")
    get_settings.cache_clear()
    refused = runner.invoke(main, ["score", "--sweep"])
    assert refused.exit_code == 2
    assert "--sweep needs RADAR_SWEEP_INTERVAL above 0" in refused.output


def test_score_serves_its_own_metrics(tmp_path: Path) -> None:
    env = {**os.environ, "RADAR_DATABASE_URL": f"sqlite:///{tmp_path / 'score.db'}"}
    asyncio.run(create_keys(env["RADAR_DATABASE_URL"], {}))  # migrated, as `radar migrate` does
    port = _free_port()
    scorer = subprocess.Popen(
        [RADAR, "score", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                assert scorer.poll() is None
                time.sleep(0.1)
        assert "radar_scorer_pending_events 0.0" in text
        assert "radar_scorer_lag_seconds_count 0.0" in text
    finally:
        scorer.send_signal(signal.SIGTERM)
        _, errors = scorer.communicate(timeout=30)
    assert scorer.returncode == 0, errors
    assert b"Traceback" not in errors


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["migrate"], {"RADAR_CURRENCY": "XYZ"}, "configuration: RADAR_CURRENCY: "),
        (["migrate"], {"RADAR_DATABASE_URL": "mysql://x/y"}, "RADAR_DATABASE_URL: "),
        (
            ["keys", "list"],
            {"RADAR_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"},
            "the database could not be reached: ",
        ),
        (["keys", "revoke", "rk_00000000"], {}, "No API key 'rk_00000000'."),
        (
            ["serve", "--port", "1"],
            {"RADAR_POLICY_FILE": "/nonexistent/policy.json"},
            "cannot read the policy file /nonexistent/policy.json",
        ),
    ],
    ids=["bad-setting", "bad-database-url", "database-unreachable", "unknown-key", "policy"],
)
def test_a_failing_command_says_one_line_and_exits_non_zero(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    """A real `radar` process, as a person runs it: one line, no traceback."""
    environment = {
        **os.environ,
        "RADAR_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        **env,
    }
    environment.pop(TRACEBACK_VARIABLE, None)
    result = subprocess.run(
        [RADAR, *args], env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ")
    assert says in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_an_unexpected_error_is_one_line_too() -> None:
    assert one_line(KeyError("x")) == (
        f"unexpected error: KeyError: 'x' (set {TRACEBACK_VARIABLE}=1 to see where)"
    )


def _fails_in_one_line(args: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    """Run a real `radar` process (RADAR_DATABASE_URL unset unless `env` sets it): it must
    fail with exit 1 and one line on stderr, the line it returns."""
    environment = {**os.environ}
    environment.pop("RADAR_DATABASE_URL", None)
    environment.pop(TRACEBACK_VARIABLE, None)
    result = subprocess.run(
        [RADAR, *args],
        env={**environment, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ")
    assert "Traceback" not in result.stderr + result.stdout
    return line


def fails_in_one_line(args: list[str]) -> str:
    """Run `radar` in this process (its environment as the test set it): it must fail with
    exit 1 and one line on stderr, no exception escaping (a real process would print its
    traceback), the line it returns. `_fails_in_one_line` runs a real process."""
    result = CliRunner().invoke(main, args, env={TRACEBACK_VARIABLE: None})
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: ")
    assert "Traceback" not in result.output
    return line


def test_version_is_the_distribution_s(runner: CliRunner) -> None:
    from importlib.metadata import version

    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"radar, version {version('defection-radar')}"


def test_revoke_by_prefix_whole_key_or_name(runner: CliRunner) -> None:
    def create(name: str) -> str:
        created = runner.invoke(main, ["keys", "create", "--name", name, "--scope", "read"])
        assert created.exit_code == 0, created.output
        return created.stdout.strip()

    by_key, by_name, twin_1, twin_2 = create("a"), create("b"), create("twin"), create("twin")
    assert len({by_key, by_name, twin_1, twin_2}) == 4

    def active() -> set[str]:
        listed = runner.invoke(main, ["keys", "list"]).stdout
        return {line.split("\t")[0] for line in listed.splitlines()}

    def prefix(key: str) -> str:
        return key[: len("rk_") + 8]

    revoked = runner.invoke(main, ["keys", "revoke", by_key])  # the whole key
    assert revoked.exit_code == 0, revoked.output
    assert revoked.stdout.strip() == f"revoked {prefix(by_key)} 'a'"
    assert by_key not in revoked.output  # a secret is never echoed
    assert runner.invoke(main, ["keys", "revoke", "b"]).stdout.strip() == (
        f"revoked {prefix(by_name)} 'b'"  # by its name
    )
    assert active() == {prefix(twin_1), prefix(twin_2)}

    ambiguous = runner.invoke(main, ["keys", "revoke", "twin"])
    assert ambiguous.exit_code == 1
    assert f"2 active keys are named 'twin': {prefix(twin_1)}, {prefix(twin_2)}" in (
        ambiguous.stderr
    )
    assert active() == {prefix(twin_1), prefix(twin_2)}  # nothing revoked
    assert runner.invoke(main, ["keys", "revoke", prefix(twin_1)]).exit_code == 0
    assert runner.invoke(main, ["keys", "revoke", "twin"]).exit_code == 0  # one left: that one
    assert active() == set()

    wrong = twin_2[:-4] + ("AAAA" if not twin_2.endswith("AAAA") else "BBBB")
    mistyped = runner.invoke(main, ["keys", "revoke", wrong])
    assert mistyped.exit_code == 1
    assert "no key matches the one given" in mistyped.stderr
    assert wrong not in mistyped.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["keys", "revoke", "nobody"], "No API key 'nobody'. Give its prefix"),
        (["keys", "revoke", "rk_0000"], "No API key 'rk_0000'."),
    ],
    ids=["unknown-name", "unknown-prefix"],
)
def test_an_unknown_key_is_one_line_naming_the_database(
    runner: CliRunner, tmp_path: Path, args: list[str], says: str
) -> None:
    database = tmp_path / "cli.db"  # the runner's
    line = fails_in_one_line(args)
    assert says in line
    assert line.endswith(f"(database: sqlite:///{database})")


def test_a_relative_sqlite_file_that_is_not_there_is_refused(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default database is ./var/radar.db: a key created from the wrong directory must
    not land in a new, empty database the service never reads. One real process, the other
    commands in this process (in the same directory, with the same environment)."""
    default = tmp_path / "var" / "radar.db"
    line = _fails_in_one_line(
        ["keys", "create", "--name", "till-1", "--scope", "ingest"], {}, cwd=tmp_path
    )
    assert line.startswith(f"Error: no database at {default} ")
    assert "set RADAR_DATABASE_URL to the service's database" in line
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RADAR_DATABASE_URL", raising=False)
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    get_settings.cache_clear()
    for args in (
        ["keys", "create", "--name", "till-1", "--scope", "ingest"],
        ["keys", "list"],
        ["keys", "revoke", "till-1"],
        ["scores"],
        ["sweep"],
        ["refit"],
        ["rebuild"],
        ["score", "--once"],
        ["dispatch", "--once"],
    ):
        line = fails_in_one_line(args)
        assert line.startswith(f"Error: no database at {default} "), args
        assert "set RADAR_DATABASE_URL to the service's database" in line
    monkeypatch.setenv("RADAR_DATABASE_URL", "sqlite:///data/radar.db")
    get_settings.cache_clear()
    relative = fails_in_one_line(["keys", "list"])
    assert f"no database at {tmp_path / 'data' / 'radar.db'} " in relative
    assert list(tmp_path.iterdir()) == []  # nothing created

    monkeypatch.delenv("RADAR_DATABASE_URL")
    get_settings.cache_clear()
    migrated = runner.invoke(main, ["migrate"])  # migrate creates it, and says where
    assert migrated.exit_code == 0, migrated.output
    assert migrated.stderr.strip() == f"database: sqlite:///{default}"
    created = runner.invoke(main, ["keys", "create", "--name", "till-1", "--scope", "ingest"])
    assert created.exit_code == 0, created.output
    assert created.stdout.strip().startswith("rk_")
    assert f"database: sqlite:///{default}" in created.stderr.splitlines()


def test_every_command_on_the_database_says_which(runner: CliRunner, tmp_path: Path) -> None:
    said = f"database: sqlite:///{tmp_path / 'cli.db'}"
    history = tmp_path / "history.csv"
    history.write_text("customer_id,occurred_at,amount\nc-1,2026-01-05,10\nc-1,2026-01-12,12\n")
    for args in (
        ["migrate"],
        ["keys", "create", "--name", "x", "--scope", "read"],
        ["keys", "list"],
        ["keys", "revoke", "x"],
        ["import", str(history), "--store", "s-1"],
        ["rebuild"],
        ["sweep"],
        ["scores", "--out", str(tmp_path / "scores.csv")],
        ["score", "--once"],
        ["dispatch", "--once"],
        ["refit"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output)
        assert said in result.stderr.splitlines(), args
        assert said not in result.stdout, args  # output stays the command's own
