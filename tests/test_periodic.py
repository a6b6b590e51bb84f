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


async def test_stop_lets_a_round_reach_its_safe_point_then_ends_the_loop() -> None:
    jobs = PeriodicJobs()
    steps: list[int] = []
    started = asyncio.Event()

    async def long_round() -> None:
        started.set()
        for step in range(1000):  # like a sweep: many short transactions
            if jobs.stopping:
                return
            steps.append(step)
            await asyncio.sleep(0.001)

    jobs.start(timedelta(hours=1), "long", long_round)
    await started.wait()
    await asyncio.sleep(0.01)
    await jobs.stop(grace=timedelta(seconds=5))
    done = len(steps)
    assert 0 < done < 1000  # it stopped between steps, on its own
    await asyncio.sleep(0.02)
    assert len(steps) == done


async def test_a_round_that_ignores_stop_is_cancelled_after_the_grace() -> None:
    jobs = PeriodicJobs()
    cancelled = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    jobs.start(timedelta(hours=1), "stubborn", stubborn)
    await asyncio.sleep(0.01)
    await jobs.stop(grace=timedelta(milliseconds=50))
    assert cancelled.is_set()
