"""The dispatcher: claims due deliveries, sends them, records every attempt.

A round claims deliveries under a lease in one short transaction and commits it; only then
are they sent, with no transaction open across the HTTP call. The lease outlasts the request
timeout, so a delivery is sent twice only when its claimer died mid-send (at-least-once:
receivers dedupe on `webhook-id`). Outcomes are written in batches, in one transaction with
the endpoints' health: failures in a row, the circuit breaker, and disabling.

Any number of dispatchers may run on one PostgreSQL database (claims skip rows another holds);
on SQLite the service's single process is the one claimer.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import random
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from sqlalchemy import Connection

from app.kit.db import TransactionRunner, utcnow
from app.kit.errors import DATABASE_UNAVAILABLE_ERRORS
from app.kit.metrics import Metrics
from app.kit.settings import Settings
from app.kit.text import storable
from app.webhooks import outbox, repository
from app.webhooks.repository import EndpointRow, Job
from app.webhooks.signing import signature_header
from app.webhooks.targets import GuardedTransport, Resolver, system_resolver

logger = logging.getLogger("radar.webhooks")

RESPONSE_BODY_LIMIT = 1024  # bytes of the receiver's answer kept with the attempt
ERROR_LIMIT = 500  # characters of an attempt's error (the column's size)
USER_AGENT = "DefectionRadar-Webhooks/0.1"


@dataclass(frozen=True, slots=True)
class Outcome:
    job: Job
    attempted_at: datetime
    duration_ms: float
    status_code: int | None = None
    body: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds asked for by a 429 or 503

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def stripped(self, why: BaseException) -> Outcome:
        """The attempt without what the database refused: a status code only if it is
        one, no answer, and why it could not be stored in full."""
        status = self.status_code if self.status_code in range(100, 600) else None
        error = f"the attempt could not be stored in full ({type(why).__name__})"
        if self.error:
            error = f"{self.error}; {error}"
        return Outcome(self.job, self.attempted_at, 0.0, status, None, error, self.retry_after)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule: Sequence[timedelta]
    retry_after_max: timedelta
    circuit_failures: int
    cooldown: timedelta
    cooldown_max: timedelta
    disable_after: timedelta
    jitter: Callable[[], float] = field(
        default=lambda: random.uniform(0.8, 1.2)  # noqa: S311 - spreading retries, not secrets
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            settings.webhook_retry_schedule,
            settings.webhook_retry_after_max,
            settings.webhook_circuit_failures,
            settings.webhook_circuit_cooldown,
            settings.webhook_circuit_cooldown_max,
            settings.webhook_disable_after,
        )

    def next_attempt(self, outcome: Outcome, now: datetime) -> datetime | None:
        """When to try again after a failed attempt; None: never (dead letter)."""
        if outcome.status_code == 410 or outcome.job.attempt > len(self.schedule):
            return None
        if outcome.retry_after is not None:
            # Clamped in seconds: the receiver's number may be beyond what a timedelta holds.
            seconds = min(outcome.retry_after, self.retry_after_max.total_seconds())
            return now + timedelta(seconds=seconds)
        wait: timedelta = self.schedule[outcome.job.attempt - 1] * self.jitter()
        return now + wait

    def pause_until(self, failures: int, now: datetime) -> datetime | None:
        """The circuit breaker: open after `circuit_failures` failures in a row, for a
        cooldown that doubles with every further failure (each half-open probe)."""
        if failures < self.circuit_failures:
            return None
        doublings = min(failures - self.circuit_failures, 30)
        cooldown: timedelta = min(self.cooldown * (1 << doublings), self.cooldown_max)
        return now + cooldown


def record(
    connection: Connection, outcomes: Sequence[Outcome], policy: RetryPolicy, now: datetime
) -> list[EndpointRow]:
    """Store attempts, settle deliveries, update endpoint health; returns endpoints that
    were disabled (and announced with `endpoint.disabled`)."""
    endpoints = repository.lock_endpoints(connection, [o.job.endpoint.id for o in outcomes])
    existing = repository.lock_deliveries(connection, [o.job.delivery_id for o in outcomes])
    finished, attempts, disabled = [], [], []
    for outcome in outcomes:
        if outcome.job.delivery_id not in existing:
            continue  # its endpoint was deleted meanwhile
        attempts.append(_attempt_row(outcome))
        finished.append(_delivery_row(outcome, policy, now))
        endpoint = endpoints.get(outcome.job.endpoint.id)
        if endpoint is not None and _update_health(endpoint, outcome, policy, now):
            disabled.append(endpoint)
    repository.insert_attempts(connection, attempts)
    repository.finish_deliveries(connection, finished)
    for endpoint in endpoints.values():
        repository.update_endpoint(
            connection,
            endpoint.id,
            {
                "failing_since": endpoint.failing_since,
                "consecutive_failures": endpoint.consecutive_failures,
                "paused_until": endpoint.paused_until,
                "enabled": endpoint.enabled,
                "disabled_reason": endpoint.disabled_reason,
                "disabled_at": endpoint.disabled_at,
            },
        )
    for endpoint in disabled:
        outbox.enqueue_endpoint_disabled(connection, endpoint, now)
    return disabled


def _attempt_row(outcome: Outcome) -> dict[str, object]:
    return {
        "delivery_id": outcome.job.delivery_id,
        "endpoint_id": outcome.job.endpoint.id,
        "attempted_at": outcome.attempted_at,
        "duration_ms": round(outcome.duration_ms, 3),
        "status_code": outcome.status_code,
        "response_body": None
        if outcome.body is None
        else storable(outcome.body, RESPONSE_BODY_LIMIT),
        "error": None if outcome.error is None else storable(outcome.error, ERROR_LIMIT),
        "succeeded": outcome.succeeded,
    }


def _delivery_row(outcome: Outcome, policy: RetryPolicy, now: datetime) -> dict[str, object]:
    retry_at = None if outcome.succeeded else policy.next_attempt(outcome, now)
    status = "succeeded" if outcome.succeeded else ("pending" if retry_at else "failed")
    return {
        "delivery_id": outcome.job.delivery_id,
        "attempt": outcome.job.attempt,
        "new_status": status,
        "new_next_attempt_at": retry_at,
        "new_finished_at": None if status == "pending" else now,
        "new_status_code": outcome.status_code,
        "new_error": None if outcome.error is None else storable(outcome.error, ERROR_LIMIT),
    }


def _update_health(
    endpoint: EndpointRow, outcome: Outcome, policy: RetryPolicy, now: datetime
) -> bool:
    """Apply one attempt to the endpoint's health; True when this disabled it."""
    if outcome.succeeded:
        endpoint.failing_since, endpoint.consecutive_failures = None, 0
        endpoint.paused_until = None
        return False
    endpoint.failing_since = endpoint.failing_since or outcome.attempted_at
    endpoint.consecutive_failures += 1
    endpoint.paused_until = policy.pause_until(endpoint.consecutive_failures, now)
    if not endpoint.enabled:
        return False
    if outcome.status_code == 410:
        reason = "the receiver answered 410 Gone"
    elif now - endpoint.failing_since >= policy.disable_after:
        reason = f"every attempt failed since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC"
    else:
        return False
    endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = False, reason, now
    logger.warning("webhook endpoint disabled", extra={"endpoint": endpoint.id, "why": reason})
    return True


class _Bucket:
    """Token bucket of an endpoint's rate limit (per dispatcher process)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = max(rate, 1.0)
        self.at = time.monotonic()

    def available(self) -> int:
        now = time.monotonic()
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.at) * self.rate)
        self.at = now
        return math.floor(self.tokens)

    def seconds_to_next(self) -> float:
        return max(0.0, (1 - self.tokens) / self.rate)


class Dispatcher:
    def __init__(
        self,
        transactions: TransactionRunner,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        resolver: Resolver = system_resolver,
        clock: Callable[[], datetime] = utcnow,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._transactions = transactions
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._policy = policy or RetryPolicy.from_settings(settings)
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(
                settings.webhook_allowed_networks, resolver, settings.webhook_concurrency
            ),
            timeout=settings.webhook_timeout.total_seconds(),
            follow_redirects=False,  # a 3xx is a failure: the receiver must be configured
            trust_env=False,
        )
        self._inflight: dict[asyncio.Task[None], Job] = {}
        self._per_endpoint: Counter[int] = Counter()
        self._buckets: dict[int, _Bucket] = {}
        self._outcomes: list[Outcome] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.Task[None] | None = None

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="webhook-dispatcher")
        # Deliveries queued by a transaction of this process wake the dispatcher at once;
        # the poll interval is for those other processes (replicas) queue.
        self._transactions.after_commit.append(self._wake.set)

    async def _run(self) -> None:
        poll = self._settings.webhook_poll_interval.total_seconds()
        while not self._stopping:
            self._wake.clear()  # a send finishing from here on wakes the wait below
            try:
                due_in = await self.dispatch_due()
                delay = poll if due_in is None else min(due_in, poll)
            except DATABASE_UNAVAILABLE_ERRORS as exc:
                logger.warning("webhook dispatch paused: database unavailable (%r)", exc)
                delay = max(poll, 1.0)
            except Exception:
                logger.exception("webhook dispatch round failed")
                delay = max(poll, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def run_until_idle(
        self,
        horizon: timedelta = timedelta(seconds=2),
        limit: timedelta = timedelta(seconds=30),
    ) -> None:
        """Dispatch until nothing is in flight and nothing is due within `horizon` (tests,
        and `radar dispatch --once`)."""
        deadline = time.monotonic() + limit.total_seconds()
        while time.monotonic() < deadline:
            due_in = await self.dispatch_due()
            if self._inflight:
                await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)
            elif self._outcomes:
                continue
            elif due_in is None or due_in > horizon.total_seconds():
                return
            else:
                await asyncio.sleep(due_in)
        raise TimeoutError("webhook deliveries still due or in flight")

    async def stop(self, grace: timedelta = timedelta(seconds=10)) -> None:
        """Claim nothing more; let sends in flight finish within `grace`, give the rest
        back to the queue unsent-as-far-as-we-know, and write every outcome."""
        self._stopping = True
        if self._wake.set in self._transactions.after_commit:
            self._transactions.after_commit.remove(self._wake.set)
        self._wake.set()
        if self._loop is not None:
            await asyncio.gather(self._loop, return_exceptions=True)
        released: list[Job] = []
        if self._inflight:
            _, late = await asyncio.wait(list(self._inflight), timeout=grace.total_seconds())
            released = [self._inflight[task] for task in late]
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        try:
            await self._flush()
            if released:
                now = self._clock()
                await self._transactions.run(lambda c: repository.release(c, released, now))
        finally:
            await self._client.aclose()

    # -- one round -------------------------------------------------------------------------

    async def dispatch_due(self) -> float | None:
        """Write finished outcomes, claim what is due and start sending it. Returns the
        seconds until more may be due (0: look again now), None when nothing is queued."""
        await self._flush()
        heads = await self._transactions.read(repository.queue_heads)
        now = self._clock()
        due_in: float | None = None
        free = self._settings.webhook_concurrency - len(self._inflight)
        plan: list[tuple[EndpointRow, int]] = []
        for endpoint, due in heads:
            ready_at = max(due, endpoint.paused_until or due)
            if ready_at > now:
                due_in = _sooner(due_in, (ready_at - now).total_seconds())
                continue
            quota = min(self._quota(endpoint), free)
            if quota > 0:
                plan.append((endpoint, quota))
                free -= quota
            elif endpoint.rate_limit:
                due_in = _sooner(due_in, self._bucket(endpoint).seconds_to_next())
            else:  # busy (in flight here, or no capacity): a finishing send wakes us
                due_in = _sooner(due_in, self._settings.webhook_poll_interval.total_seconds())
        if not plan:
            return due_in
        lease_end = now + self._settings.webhook_lease

        def claim_all(connection: Connection) -> list[Job]:
            return [
                job
                for endpoint, quota in plan
                for job in repository.claim(connection, endpoint, now, lease_end, quota)
            ]

        jobs = await self._transactions.run(claim_all)
        for job in jobs:
            if job.endpoint.rate_limit:
                self._bucket(job.endpoint).tokens -= 1
            self._per_endpoint[job.endpoint.id] += 1
            task = asyncio.create_task(self._deliver(job), name=f"webhook-{job.delivery_id}")
            self._inflight[task] = job
        claimed = Counter(job.endpoint.id for job in jobs)
        # An endpoint that filled its quota may have more due: look again at once.
        more = any(claimed[endpoint.id] >= quota for endpoint, quota in plan)
        if more and len(self._inflight) < self._settings.webhook_concurrency:
            return 0.0
        return due_in

    def _quota(self, endpoint: EndpointRow) -> int:
        busy = self._per_endpoint[endpoint.id]
        one_at_a_time = endpoint.ordered or (
            endpoint.consecutive_failures >= self._policy.circuit_failures  # half-open probe
        )
        if one_at_a_time:
            return 0 if busy else 1
        if endpoint.rate_limit:
            return self._bucket(endpoint).available()
        return self._settings.webhook_concurrency

    def _bucket(self, endpoint: EndpointRow) -> _Bucket:
        assert endpoint.rate_limit is not None
        bucket = self._buckets.get(endpoint.id)
        if bucket is None or bucket.rate != endpoint.rate_limit:
            bucket = self._buckets[endpoint.id] = _Bucket(endpoint.rate_limit)
        return bucket

    async def _deliver(self, job: Job) -> None:
        try:
            outcome = await self.send(job)
        finally:
            task = asyncio.current_task()
            assert task is not None
            self._inflight.pop(task, None)
            self._per_endpoint[job.endpoint.id] -= 1
        self._outcomes.append(outcome)
        if self._metrics is not None:
            result = "succeeded" if outcome.succeeded else ("error" if outcome.error else "failed")
            self._metrics.webhook_attempts.labels(result).inc()
            self._metrics.webhook_latency.observe(outcome.duration_ms / 1000)
        self._wake.set()

    async def _flush(self) -> None:
        if not self._outcomes:
            return
        outcomes, self._outcomes = self._outcomes, []
        now = self._clock()
        try:
            await self._transactions.run(lambda c: record(c, outcomes, self._policy, now))
        except DATABASE_UNAVAILABLE_ERRORS:
            self._outcomes[:0] = outcomes  # written on the next round; the leases still hold
            raise
        except Exception:
            # One attempt the database refuses must not keep every other endpoint's
            # outcomes (and so their queues) from being written: each alone, then stripped.
            logger.exception("writing %d webhook outcomes failed; one by one", len(outcomes))
            await self._record_one_by_one(outcomes, now)
        except BaseException:
            self._outcomes[:0] = outcomes
            raise

    async def _record_one_by_one(self, outcomes: list[Outcome], now: datetime) -> None:
        for index, outcome in enumerate(outcomes):
            try:
                await self._record_alone(outcome, now)
            except DATABASE_UNAVAILABLE_ERRORS:
                self._outcomes[:0] = outcomes[index:]
                raise

    async def _record_alone(self, outcome: Outcome, now: datetime) -> None:
        try:
            await self._transactions.run(lambda c: record(c, [outcome], self._policy, now))
            return
        except DATABASE_UNAVAILABLE_ERRORS:
            raise
        except Exception as exc:
            stripped = outcome.stripped(exc)
        logger.warning(
            "webhook attempt set aside: stored without the receiver's answer",
            extra={"delivery": outcome.job.delivery_id, "error": stripped.error},
        )
        if self._metrics is not None:
            self._metrics.set_aside.labels("dispatcher").inc()
        try:
            await self._transactions.run(lambda c: record(c, [stripped], self._policy, now))
        except DATABASE_UNAVAILABLE_ERRORS:
            raise
        except Exception:
            # Not even the bare attempt could be written: its lease runs out and the
            # delivery is sent again (at least once), like after a crash.
            logger.exception("webhook attempt dropped", extra={"delivery": outcome.job.delivery_id})

    # -- one attempt -----------------------------------------------------------------------

    async def send(self, job: Job) -> Outcome:
        """POST the message, signed; never raises for what the receiver or network did."""
        body = orjson.dumps(job.payload)
        attempted_at = self._clock()
        timestamp = int(attempted_at.timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "accept-encoding": "identity",  # the answer is only kept, never needed whole
            "webhook-id": job.message_uid,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                job.endpoint.signing_secrets(attempted_at), job.message_uid, timestamp, body
            ),
        }
        started = time.perf_counter()
        timeout = self._settings.webhook_timeout.total_seconds()
        try:
            async with (
                asyncio.timeout(timeout),
                self._client.stream("POST", job.endpoint.url, content=body, headers=headers) as r,
            ):
                answer = await _read_start(r)
        except TimeoutError:
            return self._failed(job, attempted_at, started, f"no answer within {timeout:g} s")
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            return self._failed(job, attempted_at, started, f"{type(exc).__name__}: {exc}")
        return Outcome(
            job,
            attempted_at,
            (time.perf_counter() - started) * 1000,
            status_code=r.status_code,
            body=answer,
            error=None if 200 <= r.status_code < 300 else _status_error(r),
            retry_after=_retry_after(r, attempted_at),
        )

    @staticmethod
    def _failed(job: Job, attempted_at: datetime, started: float, error: str) -> Outcome:
        elapsed = (time.perf_counter() - started) * 1000
        return Outcome(job, attempted_at, elapsed, error=storable(error, ERROR_LIMIT))


def _sooner(current: float | None, candidate: float) -> float:
    return candidate if current is None else min(current, candidate)


async def _read_start(response: httpx.Response) -> str:
    """The first bytes of the answer, as storable text; the rest is not read.

    Raw bytes, not httpx's decoded stream: a small compressed answer can inflate without
    bound. gzip and deflate are inflated here up to the limit; other encodings are named.
    """
    kept = b""
    async for chunk in response.aiter_raw():
        kept += chunk
        if len(kept) >= RESPONSE_BODY_LIMIT:
            break
    kept = kept[:RESPONSE_BODY_LIMIT]
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:  # wbits | 32: a gzip or zlib header, whichever it has
            kept = zlib.decompressobj(zlib.MAX_WBITS | 32).decompress(kept, RESPONSE_BODY_LIMIT)
        except zlib.error:
            return f"({storable(encoding, 40)}-encoded answer that does not inflate)"
    elif encoding not in ("", "identity"):
        return f"({len(kept)} bytes of a {storable(encoding, 40)}-encoded answer, not shown)"
    return storable(kept.decode("utf-8", errors="replace"), RESPONSE_BODY_LIMIT)


def _status_error(response: httpx.Response) -> str:
    if 300 <= response.status_code < 400:
        return f"HTTP {response.status_code}: redirects are not followed"
    return f"HTTP {response.status_code}"


def _retry_after(response: httpx.Response, now: datetime) -> float | None:
    """Retry-After of a 429 or 503, in seconds (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if response.status_code not in (429, 503) or not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
