"""Per-key request rate limits: a moving window per key and kind, in this process's memory.

The counting is the `limits` package's (MovingWindowRateLimiter over MemoryStorage): exact
over the window, and it tells when the oldest request leaves it, which is the Retry-After.
Each process counts alone, so N replicas let a key make up to N times the limit.
"""

from __future__ import annotations

import math
import time
from typing import Literal

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from app.kit.errors import TooManyRequests
from app.kit.settings import Settings

Kind = Literal["ingest", "read"]


def _items(value: str) -> list[RateLimitItem]:
    return [] if value == "off" else parse_many(value)


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._limits: dict[Kind, list[RateLimitItem]] = {
            "ingest": _items(settings.rate_limit_ingest),
            "read": _items(settings.rate_limit_read),
        }

    def check(self, kind: Kind, key: str) -> None:
        """Count one request of `key`, or raise 429 if any of its limits is reached.

        Every limit is tested before any is counted, so a refused request uses up nothing.
        (No await in between: nothing else runs on this event loop meanwhile.)
        """
        items = self._limits[kind]
        for item in items:
            if not self._limiter.test(item, kind, key):
                stats = self._limiter.get_window_stats(item, kind, key)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                raise TooManyRequests(
                    f"This API key may make at most {item} {kind} request(s); "
                    f"retry in {retry_after} s.",
                    headers={"Retry-After": str(retry_after)},
                )
        for item in items:
            self._limiter.hit(item, kind, key)
