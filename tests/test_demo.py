"""`radar demo`: a short run to completion, on a free port and a SQLite file of its own."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import IO

import httpx
import pytest
from click.testing import CliRunner

from app.synthetic.command import demo_command
from app.synthetic.demo import DemoOptions, chain_spec


def test_the_demo_streams_a_chain_and_sums_up_what_it_caught(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    started = time.monotonic()
    result = CliRunner().invoke(
        demo_command,
        [
            *("--customers", "200", "--days", "56", "--history-days", "200"),
            *("--duration", "3", "--seed", "3", "--port", "0", "--db", str(database)),
        ],
    )
    elapsed = time.monotonic() - started
    output = result.output
    assert result.exit_code == 0, output
    assert elapsed < 60, output
    assert database.exists()  # --db keeps the database

    # The banner: where the dashboard is, and a key to paste into it.
    dashboard = _find(r"Dashboard: (http://127\.0\.0\.1:\d+/ui/)  read key: (rk_\S+)", output)
    # Alerts were printed as they opened and resolved, with the truth about the customer.
    _find(r"^\d{4}-\d\d-\d\d opened   inactivity .* truth: ", output)
    assert "--- week to " in output

    summary = output[output.index(" Summary ") :]
    for section in ("Customers", "Events", "Alerts", "by rule", "Defectors", "False alarms"):
        assert f"\n{section}" in summary or f"\n  {section}" in summary, summary
    assert "At risk" in summary
    events = _find(
        r"Events +([\d,]+) sent .*: ([\d,]+) accepted, 0 duplicates, 0 rejected", summary
    )
    assert events[1] == events[2], summary
    assert _number(_find(r"Alerts +([\d,]+) opened", summary)[1]) > 0, summary
    assert _number(_find(r"^ +stop +\d+ +inactivity +(\d+)", summary)[1]) > 0, summary
    at_risk = _find(r"At risk +(\d+) open alerts, ([\d,.]+) EUR", summary)
    assert _number(at_risk[1]) > 0, summary
    assert _number(at_risk[2]) > 0, summary

    # Without --keep-running the service is gone once the summary is printed.
    with pytest.raises(httpx.TransportError):
        httpx.get(dashboard[1], timeout=1)


def test_keep_running_serves_the_dashboard_until_ctrl_c(tmp_path: Path) -> None:
    command = "from app.synthetic.command import demo_command; demo_command()"
    options = ["--customers", "100", "--days", "14", "--history-days", "160", "--duration", "1"]
    demo = subprocess.Popen(
        [sys.executable, "-c", command, *options, "--port", "0", "--quiet", "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=Path(__file__).resolve().parents[1],
    )
    lines: queue.Queue[str] = queue.Queue()
    assert demo.stdout is not None

    def read(stream: IO[str]) -> None:  # readline blocks: a thread feeds a queue
        for line in stream:
            lines.put(line)

    threading.Thread(target=read, args=(demo.stdout,), daemon=True).start()
    output = ""
    try:
        while "until Ctrl-C" not in output:
            output += lines.get(timeout=60)
        url, key = _find(r"Dashboard: (http://\S+/ui/)  read key: (rk_\S+)", output).groups()
        # The page signs in with the printed key, and shows the call list.
        with httpx.Client(base_url=url.removesuffix("/ui/"), timeout=5) as page:
            assert page.get("/ui/").headers["location"].startswith("/ui/login")
            signed = page.post("/ui/login", data={"key": key}, follow_redirects=True)
            assert signed.status_code == 200
            assert "Customers to call" in signed.text
        alerts = httpx.get(
            url.replace("/ui/", "/v1/alerts"), headers={"Authorization": f"Bearer {key}"}
        )
        assert alerts.status_code == 200, alerts.text
        assert alerts.json()["items"], output
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0, output


def _find(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{pattern!r} is not in:\n{text}"
    return found


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_the_demo_refuses_an_existing_database_and_a_taken_port(tmp_path: Path) -> None:
    existing = tmp_path / "radar.db"
    existing.write_bytes(b"")
    result = CliRunner().invoke(demo_command, ["--db", str(existing)])
    assert result.exit_code == 2
    assert "exists" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(demo_command, ["--port", str(port)])
    assert result.exit_code == 2
    assert f"port {port} is taken" in result.output


def test_defections_fall_in_the_first_half_of_the_live_days() -> None:
    today = date(2026, 11, 22)
    spec = chain_spec(DemoOptions(customers=50, days=120, history_days=240), today)
    assert spec.end == today
    low, high = spec.defection_window
    assert spec.start + timedelta(days=round(low * spec.days)) == today - timedelta(days=120)
    assert spec.start + timedelta(days=round(high * spec.days)) == today - timedelta(days=60)
