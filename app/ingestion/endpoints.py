"""POST /v1/purchases and /v1/purchases/batch: thin HTTP over the ingestion service."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

import orjson
from fastapi import APIRouter, Header, Request, status
from pydantic import ValidationError
from starlette.responses import Response

from app.ingestion import idempotency, service
from app.ingestion.schemas import BatchIn, BatchResult, ItemStatus, PurchaseEventIn, SingleResult
from app.kit.auth import IngestKey
from app.kit.db import utcnow
from app.kit.deps import SessionDep, SettingsDep
from app.kit.errors import (
    PROBLEM_CONTENT_TYPE,
    BadRequest,
    Conflict,
    FieldError,
    PayloadTooLarge,
    Problem,
    UnsupportedMediaType,
    ValidationFailed,
    field_errors,
)
from app.kit.metrics import Metrics

router = APIRouter(prefix="/v1/purchases", tags=["ingestion"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry safely: the same key and body replay the first response (24 h)",
    ),
]


def _problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": Problem, "content": {PROBLEM_CONTENT_TYPE: {}}}
        for code in (401, 403, *codes)
    }


def _body_schema(model: type[Any]) -> dict[str, Any]:
    # The endpoints parse the raw body themselves (per-event errors, idempotency
    # fingerprints), so the schema is declared here for the OpenAPI document.
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


async def _json_body(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType("Send the body as 'Content-Type: application/json'.")
    body = await request.body()
    if not body:
        raise BadRequest("The request body is empty.", code="empty_body")
    return body


def _json(content: Any, status_code: int) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


@router.post(
    "",
    summary="Record one purchase or refund",
    status_code=status.HTTP_201_CREATED,
    response_model=SingleResult,
    responses={
        200: {"model": SingleResult, "description": "Duplicate: already stored, nothing changed"},
        **_problem_responses(400, 409, 413, 415, 422),
    },
    openapi_extra=_body_schema(PurchaseEventIn),
)
async def ingest_one(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: IngestKey,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    body = await _json_body(request)
    try:
        event = service.EVENT_ADAPTER.validate_json(body)
    except ValidationError as exc:
        _raise_invalid(exc)
    now = utcnow()
    claim = await idempotency.claim(
        session,
        api_key_id=principal.key_id,
        key=idempotency_key,
        request_fingerprint=idempotency.fingerprint("POST", request.url.path, body),
        now=now,
        ttl=settings.idempotency_key_ttl,
    )
    if claim.replay is not None:
        return claim.replay
    result = await service.store_events(
        session,
        [service.Candidate(0, event.event_id, event)],
        received_at=now,
        max_future_skew=settings.max_future_skew,
        pointer_prefix=(),
    )
    _metrics(request).count_events(result.accepted, result.duplicates, result.rejected)
    outcome = result.results[0]
    if outcome.errors:
        _raise_single_rejection(outcome.errors)
    accepted = outcome.status is ItemStatus.ACCEPTED
    response = _json(
        {"event_id": event.event_id, "status": outcome.status.value},
        status.HTTP_201_CREATED if accepted else status.HTTP_200_OK,
    )
    return await claim.save(session, response)


def _raise_invalid(exc: ValidationError) -> NoReturn:
    if any(e["type"] == "json_invalid" for e in exc.errors()):
        raise BadRequest("The request body is not valid JSON.", code="malformed_json")
    errors = field_errors(exc.errors(include_url=False))
    raise ValidationFailed(f"{len(errors)} field(s) are not valid.", errors=errors)


def _raise_single_rejection(errors: list[Any]) -> NoReturn:
    fields = [FieldError(**e.model_dump()) for e in errors]
    if fields[0].code == "event_id_conflict":
        raise Conflict(fields[0].message, code="event_id_conflict", errors=fields)
    raise ValidationFailed(fields[0].message, errors=fields)


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


@router.post(
    "/batch",
    summary="Record up to 1,000 purchases and refunds, with a result per event",
    response_model=BatchResult,
    responses=_problem_responses(400, 413, 415, 422),
    openapi_extra=_body_schema(BatchIn),
)
async def ingest_batch(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: IngestKey,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    body = await _json_body(request)
    try:
        candidates = service.parse_batch(body, settings.max_batch_events)
    except service.BatchEnvelopeError as exc:
        _raise_envelope(exc)
    now = utcnow()
    claim = await idempotency.claim(
        session,
        api_key_id=principal.key_id,
        key=idempotency_key,
        request_fingerprint=idempotency.fingerprint("POST", request.url.path, body),
        now=now,
        ttl=settings.idempotency_key_ttl,
    )
    if claim.replay is not None:
        return claim.replay
    result = await service.store_events(
        session, candidates, received_at=now, max_future_skew=settings.max_future_skew
    )
    _metrics(request).count_events(result.accepted, result.duplicates, result.rejected)
    content = result.model_dump()
    for item in content["results"]:
        if item["errors"] is None:
            del item["errors"]
    return await claim.save(session, _json(content, 200))


def _raise_envelope(exc: service.BatchEnvelopeError) -> NoReturn:
    if exc.code == "malformed_json":
        raise BadRequest(exc.message, code="malformed_json")
    if exc.code == "too_many_events":
        raise PayloadTooLarge(exc.message, code="too_many_events")
    raise ValidationFailed(
        exc.message,
        code="validation_error",
        errors=[FieldError(pointer=exc.pointer, code=exc.code, message=exc.message)],
    )
