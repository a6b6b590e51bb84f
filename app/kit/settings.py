"""Service settings: one typed class, read from `RADAR_*` environment variables."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from limits import parse_many
from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_extra_types.currency_code import ISO4217
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./var/radar.db"


def normalize_database_url(url: str) -> str:
    """Map any SQLite or PostgreSQL URL onto the async driver the service uses.

    Operators write `postgresql://...`, `postgresql+psycopg://...` or `sqlite:///...`; the
    service always talks through asyncpg or aiosqlite, so the driver part is replaced.
    """
    match = re.match(r"^(?P<scheme>[a-z0-9]+)(\+[a-z0-9_]+)?://", url)
    if match is None:
        raise ValueError("database_url must look like 'sqlite:///path' or 'postgresql://...'")
    scheme = match["scheme"]
    rest = url[match.end() :]
    if scheme == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise ValueError(f"unsupported database {scheme!r}: use sqlite or postgresql")


def _seconds(value: object) -> object:
    """Durations in the environment are ISO 8601 (`PT5M`) or plain seconds (`300`, `0.2`)."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d*)?\s*", value):
        return float(value)
    return value


Duration = Annotated[timedelta, BeforeValidator(_seconds)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RADAR_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = DEFAULT_SQLITE_URL
    migrate_on_start: bool = True
    # FULL fsyncs the WAL on every commit: an acknowledged event survives a power cut, not
    # only a process crash. NORMAL survives process crashes only and is faster.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # Concurrent ingest transactions per process on PostgreSQL (SQLite always uses one).
    writer_concurrency: int = Field(default=2, ge=1, le=32)
    db_connect_timeout: Duration = timedelta(seconds=5)
    # PostgreSQL cancels any statement of the service that runs longer (0: never). The
    # longest legitimate ones are a refit's read of every customer and a sweep batch, well
    # under a second per 10,000 customers here; migrations are exempt.
    db_statement_timeout: Duration = timedelta(seconds=60)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch_events: int = Field(default=1000, ge=1)
    max_future_skew: Duration = timedelta(minutes=5)
    # What one event may carry: line items, and `attributes` as JSON (bytes, nesting).
    max_event_items: int = Field(default=500, ge=1, le=10_000)
    max_attributes_bytes: int = Field(default=4096, ge=64, le=1024 * 1024)
    max_attributes_depth: int = Field(default=4, ge=1, le=64)
    # The one currency of the amounts this service keeps (it sums them per customer and
    # store); events in another are refused per event.
    currency: ISO4217 = ISO4217("EUR")
    # Per-key request rate limits, in `limits` notation ("100/second", "100/second;3000/minute"),
    # or "off". Ingest counts the purchase endpoints; read counts every other route that needs
    # a key. Each process counts alone: with N replicas a key may make N times as many.
    rate_limit_ingest: str = "100/second"
    rate_limit_read: str = "20/second"
    idempotency_key_ttl: Duration = timedelta(hours=24)
    # A request's headers must arrive within this of its first byte (or of the connection),
    # and its body within RADAR_BODY_TIMEOUT of the headers: slow clients cannot hold
    # connections for ever. The body's allows a 1 MiB batch at ~20 KB/s.
    header_timeout: Duration = Field(default=timedelta(seconds=20), gt=timedelta(0))
    body_timeout: Duration = Field(default=timedelta(seconds=60), gt=timedelta(0))
    # The scorer folds stored events into patterns, scores them and publishes alerts, in
    # micro-batches after ingest has answered. Whether this process runs one (`radar score`
    # runs one on its own); every replica may.
    scorer: bool = True
    scorer_batch_size: int = Field(default=2000, ge=1, le=50_000)
    # Above this many events waiting to be scored, ingest answers 503 with Retry-After.
    scorer_max_backlog: int = Field(default=50_000, ge=1)
    # How often an idle scorer looks at the queue without being woken (ingest in this
    # process wakes it at once; on PostgreSQL every replica's ingest does, by NOTIFY).
    scorer_idle_poll: Duration = Field(default=timedelta(seconds=1), gt=timedelta(0))
    # How long the scorer waits for more events after a wake-up or a batch that was not
    # full: a steady stream is then folded many events per transaction (at most this added
    # to the lag).
    scorer_linger: Duration = Field(
        default=timedelta(milliseconds=20), ge=timedelta(0), le=timedelta(seconds=5)
    )
    # How often the population model is refitted in the background; 0 turns it off.
    refit_interval: Duration = timedelta(hours=6)
    # How often the defection score is checked against what customers did (the latest
    # matured week), and a degradation announced; 0 turns it off.
    model_quality_interval: Duration = timedelta(hours=24)
    # How often the sweeper re-evaluates customers whose next check has come (a customer who
    # stops coming sends no events); 0 turns it off. Alerts for silence open within this.
    sweep_interval: Duration = timedelta(seconds=60)
    sweep_batch_size: int = Field(default=1000, ge=1, le=100_000)
    # Why customers leave: the reasons staff may give when they resolve an alert as won back
    # or lost (a JSON list in the environment).
    alert_reasons: list[str] = Field(
        default=[
            "price",
            "staff_attitude",
            "pressure_selling",
            "service_quality",
            "wait_time",
            "product_availability",
            "competitor_offer",
            "moved_away",
            "life_change",
            "other",
        ],
        min_length=1,
    )
    # Where a caller finds the customer's phone and email: the business's CRM page for a
    # card, "{customer_id}" standing for the id (this service keeps no contact details).
    crm_customer_url: str | None = Field(default=None, max_length=500)
    # The scope that may acknowledge, snooze and resolve alerts.
    alert_workflow_scope: Literal["read", "manage"] = "read"
    # An acknowledged alert nobody resolves within this is announced again (alert.escalated);
    # 0 turns escalation off.
    alert_escalate_after: Duration = timedelta(hours=48)
    # How long the alert change feed keeps events; older cursors get 410 and resynchronise.
    alert_feed_retention: Duration = timedelta(days=30)
    # A JSON policy stored as a new version at start when it differs from the current one.
    policy_file: Path | None = None
    # Webhooks. Whether this process sends them (each replica may; `radar dispatch` runs a
    # dispatcher on its own).
    webhook_dispatcher: bool = True
    # How often the queue is looked at when idle: the added latency of a delivery, at most.
    webhook_poll_interval: Duration = Field(default=timedelta(milliseconds=200), gt=timedelta(0))
    webhook_timeout: Duration = Field(default=timedelta(seconds=15), gt=timedelta(0))
    # A claimed delivery is another dispatcher's to retry after this (the claimer died); it
    # must outlast a request, so that a slow receiver is never sent the same message twice.
    webhook_lease: Duration = timedelta(seconds=60)
    # The waits between attempts, like Svix's (each with +-20 % jitter); the delivery fails
    # (dead letter) after the last one.
    webhook_retry_schedule: list[Duration] = Field(
        default=[
            timedelta(seconds=5),
            timedelta(minutes=5),
            timedelta(minutes=30),
            timedelta(hours=2),
            timedelta(hours=5),
            timedelta(hours=10),
            timedelta(hours=10),
        ],
        min_length=1,
    )
    # A receiver's Retry-After (429, 503) is honoured up to this.
    webhook_retry_after_max: Duration = timedelta(hours=1)
    # An endpoint whose every attempt failed for this long is disabled (endpoint.disabled).
    webhook_disable_after: Duration = timedelta(days=5)
    # Circuit breaker: after this many failures in a row the endpoint is paused (no sends)
    # for the cooldown, doubled at each further failure up to the maximum.
    webhook_circuit_failures: int = Field(default=5, ge=1)
    webhook_circuit_cooldown: Duration = timedelta(seconds=30)
    webhook_circuit_cooldown_max: Duration = timedelta(minutes=30)
    # Deliveries in flight at once per process.
    webhook_concurrency: int = Field(default=32, ge=1, le=1000)
    # After a secret rotation the old secret also signs for this long.
    webhook_secret_grace: Duration = timedelta(hours=24)
    # Finished deliveries and their attempts are kept this long.
    webhook_retention: Duration = timedelta(days=30)
    # Webhook targets in private, loopback, link-local or reserved networks are refused
    # unless they are inside one of these (CIDR list, e.g. ["10.1.2.0/24"]).
    webhook_allowed_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    # How often expired idempotency records are purged; 0 turns the loop off.
    housekeeping_interval: Duration = timedelta(minutes=10)
    # How long a verified API key is trusted before it is looked up again: the longest a
    # revocation made on another replica takes to be honoured here.
    auth_cache_ttl: Duration = timedelta(seconds=5)
    key_last_used_resolution: Duration = timedelta(minutes=1)

    # On SIGTERM: how long requests in flight may take to finish, then again how long the
    # background loops (sweeper, dispatcher's sends, housekeeping) may take to stop. Keep
    # twice this under the orchestrator's kill timeout (Kubernetes: 30 s).
    shutdown_grace: Duration = Field(default=timedelta(seconds=10), ge=timedelta(0))

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True

    @field_validator("database_url")
    @classmethod
    def _normalize_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("crm_customer_url")
    @classmethod
    def _crm_link(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("https://", "http://")) or "{customer_id}" not in value:
            raise ValueError(
                "must be an http(s) address with {customer_id} where the card's id goes, "
                "e.g. https://crm.example.com/cards/{customer_id}"
            )
        return value

    @field_validator("rate_limit_ingest", "rate_limit_read")
    @classmethod
    def _parse_rate_limit(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in ("", "off"):
            return "off"
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a rate limit: write e.g. '100/second', "
                "'100/second;3000/minute' or 'off'"
            ) from exc
        return value

    @model_validator(mode="after")
    def _lease_outlasts_requests(self) -> Settings:
        if self.webhook_lease <= self.webhook_timeout:
            raise ValueError("webhook_lease must be longer than webhook_timeout")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
