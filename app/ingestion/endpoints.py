"""POST /v1/purchases and /v1/purchases/batch: thin HTTP over the ingestion service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, NoReturn

import orjson
from fastapi import APIRouter, Header, Request, status
from pydantic import ValidationError
from starlette.responses import Response

from app.ingestion import idempotency, service
from app.ingestion.schemas import (
    BatchIn,
    BatchResult,
    EventLimits,
    ItemStatus,
    PurchaseEventIn,
    SingleResult,
)
from app.ingestion.service import Candidate
from app.ingestion.writer import EventWriter, IdempotencyRequest
from app.kit.auth import IngestKey, Principal
from app.kit.errors import (
    BadRequest,
    Conflict,
    FieldError,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    problem_responses,
)
from app.kit.metrics import Metrics

router = APIRouter(prefix="/v1/purchases", tags=["ingestion"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry safely: the same key and body replay the first response (24 h)",
        # Checked by the idempotency code (422 invalid_header); documented here.
        json_schema_extra={"minLength": 1, "maxLength": 255},
    ),
]


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
        **problem_responses(400, 409, 413, 415, 422),
    },
    openapi_extra=_body_schema(PurchaseEventIn),
)
async def ingest_one(
    request: Request, principal: IngestKey, idempotency_key: IdempotencyKey = None
) -> Response:
    return await receive_one(request, principal, idempotency_key)


async def receive_one(
    request: Request, principal: Principal, idempotency_key: str | None
) -> Response:
    """The single-event endpoint's work (also served without the router: app.ingestion.asgi)."""
    body = await _json_body(request)
    try:
        candidate = service.parse_single(body, _limits(request))
    except ValidationError as exc:
        _raise_invalid(exc)
    response = await _writer(request).submit(
        [candidate], _render_single, _idempotency(request, principal, idempotency_key, body)
    )
    _count(request, [candidate])
    return response


def _render_single(candidates: Sequence[Candidate]) -> Response:
    (candidate,) = candidates
    if candidate.errors:
        fields = [FieldError(**error) for error in candidate.errors]
        if fields[0].code == "event_id_conflict":
            raise Conflict(fields[0].message, code="event_id_conflict", errors=fields)
        raise ValidationFailed(fields[0].message, errors=fields)
    accepted = candidate.status is ItemStatus.ACCEPTED
    return _json(
        {"event_id": candidate.event_id, "status": candidate.status},
        status.HTTP_201_CREATED if accepted else status.HTTP_200_OK,
    )


def _raise_invalid(exc: ValidationError) -> NoReturn:
    if any(e["type"] == "json_invalid" for e in exc.errors()):
        raise BadRequest("The request body is not valid JSON.", code="malformed_json")
    errors = [FieldError(**error) for error in service.validation_errors(exc)]
    raise ValidationFailed(f"{len(errors)} field(s) are not valid.", errors=errors)


def _limits(request: Request) -> EventLimits:
    return EventLimits.of(request.app.state.settings)


def _writer(request: Request) -> EventWriter:
    writer: EventWriter = request.app.state.event_writer
    return writer


def _idempotency(
    request: Request, principal: Principal, key: str | None, body: bytes
) -> IdempotencyRequest | None:
    if key is None:
        return None
    idempotency.check_key(key)
    fingerprint = idempotency.fingerprint("POST", request.url.path, body)
    return IdempotencyRequest(principal.key_id, key, fingerprint)


def _count(request: Request, candidates: Sequence[Candidate]) -> None:
    metrics: Metrics = request.app.state.metrics
    statuses = [c.status for c in candidates]
    metrics.count_events(
        statuses.count(ItemStatus.ACCEPTED),
        statuses.count(ItemStatus.DUPLICATE),
        statuses.count(ItemStatus.REJECTED),
    )


@router.post(
    "/batch",
    summary="Record up to 1,000 purchases and refunds, with a result per event",
    response_model=BatchResult,
    responses=problem_responses(400, 413, 415, 422),
    openapi_extra=_body_schema(BatchIn),
)
async def ingest_batch(
    request: Request,
    principal: IngestKey,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return await receive_batch(request, principal, idempotency_key)


async def receive_batch(
    request: Request, principal: Principal, idempotency_key: str | None
) -> Response:
    """The batch endpoint's work (also served without the router: app.ingestion.asgi)."""
    body = await _json_body(request)
    settings = request.app.state.settings
    try:
        candidates = service.parse_batch(body, settings.max_batch_events, _limits(request))
    except service.BatchEnvelopeError as exc:
        _raise_envelope(exc)
    response = await _writer(request).submit(
        candidates, _render_batch, _idempotency(request, principal, idempotency_key, body)
    )
    _count(request, candidates)
    return response


def _render_batch(candidates: Sequence[Candidate]) -> Response:
    return _json(service.summarise(candidates), status.HTTP_200_OK)


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
