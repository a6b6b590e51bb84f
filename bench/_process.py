"""Helpers the benchmarks share: the `radar` command, free ports on 127.0.0.1, percentiles."""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def radar(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "radar"), *args], env=env, cwd=ROOT, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"radar {' '.join(args)} failed:\n{done.stderr.decode()[-2000:]}")
    return done.stdout.decode()


def percentile(values: Sequence[float], pct: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]
