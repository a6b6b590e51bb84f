from __future__ import annotations

from fastapi import APIRouter, Request, status

from app.keys import service
from app.keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyRead
from app.kit.auth import Authenticator, ManageKey
from app.kit.deps import SessionDep
from app.kit.errors import problem_responses
from app.kit.params import RowId

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=problem_responses(404))


@router.get("", summary="List API keys (prefix, name, scopes, last use)")
async def list_keys(session: SessionDep, _: ManageKey, include_revoked: bool = False) -> ApiKeyList:
    return ApiKeyList(items=await service.list_keys(session, include_revoked=include_revoked))


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create an API key (shown once)")
async def create_key(body: ApiKeyCreate, session: SessionDep, _: ManageKey) -> ApiKeyCreated:
    return await service.create_key(session, body.name, body.scopes)


@router.delete("/{key_id}", summary="Revoke an API key")
async def revoke_key(
    key_id: RowId, request: Request, session: SessionDep, _: ManageKey
) -> ApiKeyRead:
    revoked = await service.revoke_key(session, key_id)
    authenticator: Authenticator = request.app.state.authenticator
    authenticator.forget(revoked.prefix)
    return revoked
