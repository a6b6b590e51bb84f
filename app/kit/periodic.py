"""Housekeeping loops that run inside the service process.

Only for work that is safe to skip or repeat (purging expired rows): a loop that dies with the
process simply runs again on the next start. Durable work goes through database-backed queues.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

logger = logging.getLogger("radar.periodic")


async def run_every(interval: timedelta, name: str, job: Callable[[], Awaitable[object]]) -> None:
    while True:
        try:
            result = await job()
            logger.debug("%s done", name, extra={"result": result})
        except asyncio.CancelledError:
            raise
        except Exception:
            # A failed round (database restarting, say) is retried on the next tick.
            logger.exception("%s failed", name)
        await asyncio.sleep(interval.total_seconds())


class PeriodicJobs:
    """Starts loops with the app and cancels them on shutdown."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, interval: timedelta, name: str, job: Callable[[], Awaitable[object]]) -> None:
        self._tasks.append(asyncio.create_task(run_every(interval, name, job), name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
