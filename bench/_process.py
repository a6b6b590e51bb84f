"""Helpers the benchmarks share: the `radar` command, free ports on 127.0.0.1, waiting for a
server and stopping it, percentiles."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

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


async def wait_healthy(
    base_url: str, process: subprocess.Popen[bytes], failure: Callable[[], str], within: float
) -> None:
    """Until `/healthz` answers 200; raises with `failure()` if the process exits or time
    runs out."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(failure())


def stop_group(
    process: subprocess.Popen[bytes], within: float, signal_number: int = signal.SIGTERM
) -> None:
    """Signal a process started in its own session (its whole group), then kill it if it has
    not exited `within` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal_number)
    try:
        process.wait(within)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
