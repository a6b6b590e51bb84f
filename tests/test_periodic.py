from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from app.kit.periodic import PeriodicJobs

pytestmark = pytest.mark.anyio


async def test_a_failing_round_does_not_stop_the_loop() -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database restarting")

    jobs = PeriodicJobs()
    jobs.start(timedelta(milliseconds=5), "flaky", flaky)
    for _ in range(200):
        if calls >= 3:
            break
        await asyncio.sleep(0.005)
    await jobs.stop()
    assert calls >= 3
    stopped_at = calls
    await asyncio.sleep(0.02)
    assert calls == stopped_at
