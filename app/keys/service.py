"""Creating, listing and revoking API keys (used by the API and by `radar keys`)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.keys.schemas import ApiKeyCreated, ApiKeyRead
from app.kit.auth import Scope, generate_key, hash_key
from app.kit.db import utcnow
from app.kit.errors import NotFound
from app.models import ApiKey


def _read(row: ApiKey) -> ApiKeyRead:
    return ApiKeyRead(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=[Scope(s) for s in row.scopes.split()],
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


async def create_key(session: AsyncSession, name: str, scopes: Iterable[Scope]) -> ApiKeyCreated:
    key, prefix = generate_key()
    ordered = sorted({Scope(s) for s in scopes})
    row = ApiKey(
        name=name,
        prefix=prefix,
        key_hash=hash_key(key),
        scopes=" ".join(ordered),
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return ApiKeyCreated(**_read(row).model_dump(), key=key)


async def list_keys(session: AsyncSession, *, include_revoked: bool = False) -> list[ApiKeyRead]:
    query = select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return [_read(row) for row in await session.scalars(query)]


async def revoke_key(session: AsyncSession, id_or_prefix: int | str) -> ApiKeyRead:
    column = ApiKey.id if isinstance(id_or_prefix, int) else ApiKey.prefix
    row = await session.scalar(select(ApiKey).where(column == id_or_prefix))
    if row is None:
        raise NotFound(f"No API key {id_or_prefix!r}.")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    return _read(row)
