"""Creating, listing and revoking API keys (used by the API and by `radar keys`)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.keys.schemas import ApiKeyCreated, ApiKeyRead
from app.kit.auth import Scope, generate_key, hash_key
from app.kit.db import utcnow
from app.kit.errors import Conflict, NotFound
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


async def find_key(session: AsyncSession, reference: str) -> ApiKey:
    """The key a person names: by its prefix (`rk_1a2b3c4d`), the whole key, or its name
    (when one active key has it)."""
    reference = reference.strip()
    prefix = reference[: len("rk_") + 8]
    if reference.startswith("rk_") and len(reference) > len(prefix):
        row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(reference)))
        if row is not None:
            return row
        raise NotFound(f"No API key {prefix}...: no key matches the one given.")
    row = await session.scalar(select(ApiKey).where(ApiKey.prefix == reference))
    if row is not None:
        return row
    named = list(
        await session.scalars(
            select(ApiKey)
            .where(ApiKey.name == reference, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.id)
        )
    )
    if len(named) > 1:
        prefixes = ", ".join(row.prefix for row in named)
        raise Conflict(
            f"{len(named)} active keys are named {reference!r}: {prefixes}; give one prefix"
        )
    if named:
        return named[0]
    raise NotFound(
        f"No API key {reference!r}. Give its prefix (rk_xxxxxxxx), the whole key or its name; "
        "`radar keys list --all` lists them."
    )


async def revoke(session: AsyncSession, reference: str) -> ApiKeyRead:
    """Revoke the key `find_key` finds (revoking a revoked key again changes nothing)."""
    row = await find_key(session, reference)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    return _read(row)
