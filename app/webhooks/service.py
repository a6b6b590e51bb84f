"""Managing webhook endpoints: validation of targets, secrets and their rotation, replays."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import ValidationError
from sqlalchemy import Connection

from app.kit.db import TransactionRunner, utcnow
from app.kit.errors import FieldError, NotFound, ValidationFailed
from app.kit.periodic import Job
from app.kit.settings import Settings
from app.webhooks import repository
from app.webhooks.repository import EndpointRow
from app.webhooks.schemas import (
    AttemptOut,
    DeliveryDetail,
    DeliveryOut,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    Filters,
)
from app.webhooks.signing import generate_secret
from app.webhooks.targets import Network, Resolver, TargetRefused, check_host

MAX_GRACE = timedelta(days=7)


async def check_url(url: str, allowed: Sequence[Network], resolver: Resolver) -> str:
    """The URL, if webhooks may go there; 422 naming `/url` otherwise."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise _bad_url("invalid_url", f"not a URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _bad_url("invalid_url", "must be an absolute http:// or https:// URL")
    if parsed.userinfo:
        raise _bad_url("invalid_url", "must not carry a user name or password")
    if parsed.fragment:
        raise _bad_url("invalid_url", "must not have a #fragment")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        # httpx takes any integer; the socket would fail at every delivery instead.
        raise _bad_url("invalid_url", "the port must be between 1 and 65535")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        await check_host(parsed.host, port, allowed, resolver)
    except TargetRefused as exc:
        code = "unresolvable_host" if "resolve" in str(exc) else "forbidden_target"
        raise _bad_url(code, str(exc)) from exc
    return url


def _bad_url(code: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"The webhook URL is not accepted: {message}.",
        code=code,
        errors=[FieldError(pointer="/url", code=code, message=message)],
    )


def create(connection: Connection, body: EndpointIn, now: datetime) -> EndpointRow:
    return repository.insert_endpoint(
        connection,
        {
            "url": body.url,
            "description": body.description,
            "event_types": list(body.event_types),
            "filters": body.filters.model_dump(mode="json"),
            "enabled": body.enabled,
            "rate_limit": body.rate_limit,
            "ordered": body.ordered,
            "secret": generate_secret(),
            "consecutive_failures": 0,
            "created_at": now,
            "updated_at": now,
        },
    )


def get(connection: Connection, endpoint_id: int, *, lock: bool = False) -> EndpointRow:
    try:
        return repository.get_endpoint(connection, endpoint_id, lock=lock)
    except LookupError:
        raise NotFound(f"There is no webhook endpoint {endpoint_id}.") from None


def patch(
    connection: Connection, endpoint_id: int, body: EndpointPatch, now: datetime
) -> EndpointRow:
    get(connection, endpoint_id, lock=True)
    values: dict[str, Any] = body.model_dump(mode="json", exclude_unset=True)
    if body.enabled is True:  # a fresh start: the streak that disabled it is over
        values |= {
            "disabled_reason": None,
            "disabled_at": None,
            "failing_since": None,
            "consecutive_failures": 0,
            "paused_until": None,
        }
    elif body.enabled is False:
        values |= {"disabled_reason": "disabled by a user", "disabled_at": now}
    repository.update_endpoint(connection, endpoint_id, values | {"updated_at": now})
    return get(connection, endpoint_id)


def rotate_secret(
    connection: Connection, endpoint_id: int, grace: timedelta, now: datetime
) -> EndpointRow:
    """A new secret; the old one keeps signing too until the grace period ends."""
    endpoint = get(connection, endpoint_id, lock=True)
    if grace > MAX_GRACE or grace < timedelta(0):
        raise ValidationFailed(
            "The grace period is out of range.",
            errors=[
                FieldError(
                    pointer="/grace_period",
                    code="out_of_range",
                    message=f"must be between 0 and {MAX_GRACE.days} days",
                )
            ],
        )
    repository.update_endpoint(
        connection,
        endpoint_id,
        {
            "secret": generate_secret(),
            "previous_secret": endpoint.secret if grace else None,
            "previous_secret_expires_at": now + grace if grace else None,
            "updated_at": now,
        },
    )
    return get(connection, endpoint_id)


def out(endpoint: EndpointRow) -> EndpointOut:
    return EndpointOut(
        id=endpoint.id,
        url=endpoint.url,
        description=endpoint.description,
        event_types=endpoint.event_types,
        filters=_stored_filters(endpoint.filters),
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        disabled_at=endpoint.disabled_at,
        rate_limit=endpoint.rate_limit,
        ordered=endpoint.ordered,
        failing_since=endpoint.failing_since,
        consecutive_failures=endpoint.consecutive_failures,
        paused_until=endpoint.paused_until,
        previous_secret_expires_at=endpoint.previous_secret_expires_at,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def _stored_filters(stored: dict[str, Any]) -> Filters:
    """The filters as saved. They passed the rules of their day: a later, stricter rule (no
    control character in a store id) must not make the endpoint unreadable."""
    try:
        return Filters.model_validate(stored)
    except ValidationError:
        checked = Filters.model_validate({**stored, "store_ids": None})
        return checked.model_copy(update={"store_ids": stored.get("store_ids")})


def delivery_out(row: Any) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        endpoint_id=row.endpoint_id,
        message_id=row.uid,
        event_type=row.type,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        finished_at=row.finished_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
    )


def attempt_out(row: Any) -> AttemptOut:
    return AttemptOut.model_validate(row._asdict())


def delivery_detail(connection: Connection, endpoint_id: int, delivery_id: int) -> DeliveryDetail:
    row = repository.delivery(connection, endpoint_id, delivery_id)
    if row is None:
        raise NotFound(f"Endpoint {endpoint_id} has no delivery {delivery_id}.")
    log = repository.attempts(connection, endpoint_id, delivery_id, None, 1000)
    return DeliveryDetail(
        **delivery_out(row).model_dump(),
        payload=row.payload,
        attempt_log=[attempt_out(attempt) for attempt in reversed(log)],
    )


def periodic_jobs(settings: Settings, transactions: TransactionRunner) -> list[Job]:
    """The webhooks' loops (the dispatcher is a loop of its own): old messages, deliveries
    and attempts are purged."""
    return [
        Job(
            settings.housekeeping_interval,
            "purge-webhook-messages",
            lambda: transactions.run(
                lambda c: repository.purge(c, utcnow() - settings.webhook_retention)
            ),
        )
    ]
