"""Loops that run inside the service process: housekeeping, refits, the sweeper.

Only for work that is safe to skip or repeat: a loop that dies with the process simply runs
again on the next start, and each round commits its own transactions. On shutdown a round
in progress is asked to stop at its next safe point (`PeriodicJobs.stopping`) and given a
grace period before it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from app.kit.errors import DATABASE_UNAVAILABLE_ERRORS

logger = logging.getLogger("radar.periodic")


@dataclass(frozen=True, slots=True)
class Job:
    """A loop a domain declares: `run` every `interval` (0: the loop is off)."""

    interval: timedelta
    name: str
    run: Callable[[], Awaitable[object]]


class PeriodicJobs:
    """Starts loops with the app and stops them on shutdown."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    @property
    def stopping(self) -> bool:
        """True once shutdown began: long rounds check it between their transactions."""
        return self._stop.is_set()

    def start(self, interval: timedelta, name: str, job: Callable[[], Awaitable[object]]) -> None:
        self._tasks.append(asyncio.create_task(self._run_every(interval, name, job), name=name))

    def start_all(self, jobs: Iterable[Job]) -> None:
        """Start each job whose interval is above 0."""
        for job in jobs:
            if job.interval.total_seconds() > 0:
                self.start(job.interval, job.name, job.run)

    async def _run_every(
        self, interval: timedelta, name: str, job: Callable[[], Awaitable[object]]
    ) -> None:
        while not self.stopping:
            try:
                result = await job()
                logger.debug("%s done", name, extra={"result": result})
            except asyncio.CancelledError:
                raise
            except DATABASE_UNAVAILABLE_ERRORS as exc:
                # The database is away (restarting, say): the round is retried on the next
                # tick, and a traceback per tick would say nothing more.
                logger.warning("%s paused: database unavailable (%r)", name, exc)
            except Exception:
                # A failed round (database restarting, say) is retried on the next tick.
                logger.exception("%s failed", name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval.total_seconds())

    async def stop(self, grace: timedelta = timedelta(seconds=10)) -> None:
        """Let rounds in progress reach a safe point, then cancel whatever is left."""
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace.total_seconds())
            for task in pending:
                logger.warning("%s did not stop in time: cancelled", task.get_name())
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
