"""GET/PUT /v1/policy: the business's definition of defection, versioned."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import Connection

from app.kit.auth import ManageKey
from app.kit.db import TransactionRunner
from app.kit.errors import problem_responses
from app.kit.settings import Settings
from app.policy import service
from app.policy.schemas import PolicyBody, PolicyOut

router = APIRouter(prefix="/v1/policy", tags=["policy"], responses=problem_responses())


@router.get("", summary="The policy in force (version 0: the built-in defaults)")
async def get_policy(request: Request, _: ManageKey) -> PolicyOut:
    transactions: TransactionRunner = request.app.state.transactions
    return (await transactions.read(service.current)).out()


@router.put(
    "",
    summary="Replace the policy (a new version; every customer is re-evaluated under it)",
    responses=problem_responses(422),
)
async def put_policy(body: PolicyBody, request: Request, key: ManageKey) -> PolicyOut:
    transactions: TransactionRunner = request.app.state.transactions
    settings: Settings = request.app.state.settings
    body = service.with_known_reasons(body, settings.alert_reasons)
    now = request.app.state.clock()  # the time customers are evaluated at

    def store(connection: Connection) -> service.CurrentPolicy:
        return service.replace(
            connection, body, source="api", created_by=f"{key.name} ({key.prefix})"[:100], now=now
        )

    return (await transactions.run(store)).out()
