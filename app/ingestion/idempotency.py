"""Stripe-style `Idempotency-Key`: a retried POST gets the first answer, byte for byte.

The key is claimed inside the request's own transaction, so the stored answer commits or
rolls back together with the events it describes. A concurrent request with the same key
waits on the claim (PostgreSQL's unique index, SQLite's single writer) and then replays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection
from starlette.responses import Response

from app.ingestion import repository
from app.kit.db import TransactionRunner, utcnow
from app.kit.errors import Conflict, ValidationFailed
from app.kit.periodic import Job
from app.kit.settings import Settings

MAX_KEY_LENGTH = 255
PURGE_BATCH = 5000


@dataclass(slots=True)
class IdempotencyClaim:
    record_id: int | None
    replay: Response | None

    def save(self, connection: Connection, response: Response) -> Response:
        if self.record_id is not None:
            repository.save_idempotent_response(
                connection, self.record_id, response.status_code, bytes(response.body)
            )
        return response


def check_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise ValidationFailed(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.", code="invalid_header"
        )


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(b"%s %s\n%s" % (method.encode(), path.encode(), body)).digest()


def claim(
    connection: Connection,
    *,
    api_key_id: int,
    key: str,
    request_fingerprint: bytes,
    now: datetime,
    ttl: timedelta,
) -> IdempotencyClaim:
    """Claim the key, or find the answer to replay; raises when the key cannot be used."""
    check_key(key)
    for _ in range(2):  # a second try after an expired or just-purged record is cleared
        record_id = repository.claim_idempotency_key(
            connection, api_key_id, key, request_fingerprint, now
        )
        if record_id is not None:
            return IdempotencyClaim(record_id=record_id, replay=None)
        record = repository.get_idempotency_record(connection, api_key_id, key)
        if record is None:
            continue
        if record.created_at < now - ttl:
            repository.delete_idempotency_record(connection, record.id)
            continue
        if record.request_fingerprint != request_fingerprint:
            raise ValidationFailed(
                "This Idempotency-Key was used with a different request; use a new key.",
                code="idempotency_key_reused",
            )
        if record.status_code == 0:
            raise Conflict(
                "A request with this Idempotency-Key is still being processed.",
                code="idempotency_key_in_use",
            )
        return IdempotencyClaim(
            record_id=None,
            replay=Response(
                record.response_body,
                status_code=record.status_code,
                media_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            ),
        )
    raise Conflict(
        "This Idempotency-Key could not be claimed; retry.", code="idempotency_key_in_use"
    )


def periodic_jobs(settings: Settings, transactions: TransactionRunner) -> list[Job]:
    """Ingestion's loops: expired idempotency records are forgotten."""
    return [
        Job(
            settings.housekeeping_interval,
            "purge-idempotency-records",
            lambda: purge_expired(transactions, now=utcnow(), ttl=settings.idempotency_key_ttl),
        )
    ]


async def purge_expired(runner: TransactionRunner, *, now: datetime, ttl: timedelta) -> int:
    """Forget responses older than the TTL (expired keys are never replayed anyway)."""
    purged = 0
    while True:
        deleted = await runner.run(
            lambda connection: repository.purge_idempotency_records(
                connection, now - ttl, PURGE_BATCH
            )
        )
        purged += deleted
        if deleted < PURGE_BATCH:
            return purged
