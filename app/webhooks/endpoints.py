"""/v1/webhooks/endpoints: where alert changes are delivered, and what became of each one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy import Connection

from app.kit.auth import ManageKey
from app.kit.db import TransactionRunner, utcnow
from app.kit.errors import NotFound, problem_responses
from app.kit.params import PageBefore, RowId, RowIdQuery
from app.kit.settings import Settings
from app.webhooks import repository, service
from app.webhooks.schemas import (
    AttemptPage,
    DeliveryDetail,
    DeliveryPage,
    DeliveryStatus,
    EndpointCreated,
    EndpointIn,
    EndpointList,
    EndpointOut,
    EndpointPatch,
    RecoverIn,
    Requeued,
    RotateIn,
    SecretOut,
)

router = APIRouter(
    prefix="/v1/webhooks/endpoints", tags=["webhooks"], responses=problem_responses(404)
)
EndpointId = RowId
DeliveryId = RowId


def _transactions(request: Request) -> TransactionRunner:
    transactions: TransactionRunner = request.app.state.transactions
    return transactions


async def _checked_url(request: Request, url: str) -> str:
    settings: Settings = request.app.state.settings
    return await service.check_url(
        url, settings.webhook_allowed_networks, request.app.state.resolver
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Add an endpoint (its signing secret is shown only in this answer)",
    responses=problem_responses(422),
)
async def create_endpoint(body: EndpointIn, request: Request, _: ManageKey) -> EndpointCreated:
    await _checked_url(request, body.url)
    now = utcnow()
    endpoint = await _transactions(request).run(lambda c: service.create(c, body, now))
    return EndpointCreated(**service.out(endpoint).model_dump(), secret=endpoint.secret)


@router.get("", summary="Every endpoint, with its health")
async def list_endpoints(request: Request, _: ManageKey) -> EndpointList:
    endpoints = await _transactions(request).read(repository.list_endpoints)
    return EndpointList(items=[service.out(endpoint) for endpoint in endpoints])


@router.get("/{endpoint_id}", summary="An endpoint and its health")
async def get_endpoint(request: Request, _: ManageKey, endpoint_id: EndpointId) -> EndpointOut:
    return service.out(await _transactions(request).read(lambda c: service.get(c, endpoint_id)))


@router.patch(
    "/{endpoint_id}",
    summary="Change an endpoint; `enabled: true` re-enables a disabled one",
    responses=problem_responses(422),
)
async def patch_endpoint(
    body: EndpointPatch, request: Request, _: ManageKey, endpoint_id: EndpointId
) -> EndpointOut:
    if body.url is not None:
        await _checked_url(request, body.url)
    now = utcnow()
    endpoint = await _transactions(request).run(lambda c: service.patch(c, endpoint_id, body, now))
    return service.out(endpoint)


@router.delete(
    "/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an endpoint with its deliveries and attempts",
)
async def delete_endpoint(request: Request, _: ManageKey, endpoint_id: EndpointId) -> Response:
    deleted = await _transactions(request).run(lambda c: repository.delete_endpoint(c, endpoint_id))
    if not deleted:
        raise NotFound(f"There is no webhook endpoint {endpoint_id}.")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{endpoint_id}/rotate-secret",
    summary="Issue a new secret; the old one also signs during the grace period",
    responses=problem_responses(422),
)
async def rotate_secret(
    request: Request, _: ManageKey, endpoint_id: EndpointId, body: RotateIn | None = None
) -> SecretOut:
    settings: Settings = request.app.state.settings
    grace = body.grace_period if body and body.grace_period is not None else None
    grace = settings.webhook_secret_grace if grace is None else grace
    now = utcnow()
    endpoint = await _transactions(request).run(
        lambda c: service.rotate_secret(c, endpoint_id, grace, now)
    )
    return SecretOut(
        secret=endpoint.secret, previous_secret_expires_at=endpoint.previous_secret_expires_at
    )


@router.get("/{endpoint_id}/deliveries", summary="The endpoint's deliveries, newest first")
async def list_deliveries(
    request: Request,
    _: ManageKey,
    endpoint_id: EndpointId,
    status: Annotated[list[DeliveryStatus], Query()] = [],  # noqa: B006 - FastAPI copies
    before: PageBefore = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeliveryPage:
    def read(connection: Connection) -> DeliveryPage:
        service.get(connection, endpoint_id)
        rows = repository.deliveries(connection, endpoint_id, status, before, limit + 1)
        items = [service.delivery_out(row) for row in rows[:limit]]
        return DeliveryPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    return await _transactions(request).read(read)


@router.get(
    "/{endpoint_id}/deliveries/{delivery_id}",
    summary="A delivery: the body sent and every attempt",
)
async def get_delivery(
    request: Request, _: ManageKey, endpoint_id: EndpointId, delivery_id: DeliveryId
) -> DeliveryDetail:
    return await _transactions(request).read(
        lambda c: service.delivery_detail(c, endpoint_id, delivery_id)
    )


@router.get("/{endpoint_id}/attempts", summary="Every attempt to the endpoint, newest first")
async def list_attempts(
    request: Request,
    _: ManageKey,
    endpoint_id: EndpointId,
    delivery_id: RowIdQuery = None,
    before: PageBefore = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AttemptPage:
    def read(connection: Connection) -> AttemptPage:
        service.get(connection, endpoint_id)
        rows = repository.attempts(connection, endpoint_id, delivery_id, before, limit + 1)
        items = [service.attempt_out(row) for row in rows[:limit]]
        return AttemptPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    return await _transactions(request).read(read)


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a delivery again now (failed, or even succeeded: a replay)",
)
async def retry_delivery(
    request: Request, _: ManageKey, endpoint_id: EndpointId, delivery_id: DeliveryId
) -> DeliveryDetail:
    now = utcnow()

    def requeue(connection: Connection) -> DeliveryDetail:
        service.delivery_detail(connection, endpoint_id, delivery_id)  # 404 first
        repository.requeue(connection, delivery_id, now)
        return service.delivery_detail(connection, endpoint_id, delivery_id)

    return await _transactions(request).run(requeue)


@router.post(
    "/{endpoint_id}/recover",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Re-queue every failed delivery created in [since, until)",
    responses=problem_responses(422),
)
async def recover(
    body: RecoverIn, request: Request, _: ManageKey, endpoint_id: EndpointId
) -> Requeued:
    now = utcnow()

    def requeue(connection: Connection) -> int:
        service.get(connection, endpoint_id, lock=True)
        return repository.recover(connection, endpoint_id, body.since, body.until, now)

    return Requeued(requeued=await _transactions(request).run(requeue))
