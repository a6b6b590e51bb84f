"""API keys: generation, hashing, and the request dependency that checks scopes."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.kit.db import utcnow
from app.kit.errors import Forbidden, Unauthorized
from app.kit.ratelimit import RateLimiter
from app.kit.settings import Settings
from app.models import ApiKey

KEY_PATTERN = re.compile(r"^(rk_[0-9a-f]{8})_[A-Za-z0-9_-]{32}$")


class Scope(StrEnum):
    INGEST = "ingest"
    READ = "read"
    MANAGE = "manage"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int
    prefix: str
    name: str
    scopes: frozenset[str]


def generate_key() -> tuple[str, str]:
    """A new key and its public prefix: `rk_<8 hex>_<32 url-safe chars>` (~190 bits)."""
    prefix = f"rk_{secrets.token_hex(4)}"
    return f"{prefix}_{secrets.token_urlsafe(24)}", prefix


def hash_key(key: str) -> bytes:
    # Keys are long random strings, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).digest()


@dataclass(slots=True)
class _Cached:
    principal: Principal
    expires: float
    last_used: datetime | None


class Authenticator:
    """Verifies bearer keys, with a short in-memory cache to keep the database off the hot path.

    A key revoked on this process is forgotten at once; a revocation made elsewhere is
    honoured within `auth_cache_ttl`.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = settings.auth_cache_ttl.total_seconds()
        self._last_used_resolution = settings.key_last_used_resolution
        self._cache: dict[bytes, _Cached] = {}

    def forget(self, prefix: str) -> None:
        for digest in [d for d, c in self._cache.items() if c.principal.prefix == prefix]:
            del self._cache[digest]

    async def authenticate(self, token: str) -> Principal:
        digest = hash_key(token)
        cached = self._cache.get(digest)
        if cached is None or cached.expires < time.monotonic():
            cached = await self._load(token, digest)
        await self._touch(cached)
        return cached.principal

    async def _load(self, token: str, digest: bytes) -> _Cached:
        match = KEY_PATTERN.match(token)
        if match is None:
            raise Unauthorized("The API key is malformed.")
        async with self._sessionmaker() as session:
            row = await session.scalar(
                select(ApiKey).where(ApiKey.prefix == match[1], ApiKey.revoked_at.is_(None))
            )
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            self._cache.pop(digest, None)
            raise Unauthorized("The API key is unknown or revoked.")
        principal = Principal(row.id, row.prefix, row.name, frozenset(row.scopes.split()))
        cached = _Cached(principal, time.monotonic() + self._ttl, row.last_used_at)
        self._cache[digest] = cached
        return cached

    async def _touch(self, cached: _Cached) -> None:
        """Record use at a coarse resolution so that every request does not write."""
        now = utcnow()
        if cached.last_used and now - cached.last_used < self._last_used_resolution:
            return
        cached.last_used = now
        async with self._sessionmaker.begin() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.id == cached.principal.key_id).values(last_used_at=now)
            )


bearer = HTTPBearer(auto_error=False, bearerFormat="rk_<id>_<secret>")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_scope(scope: Scope) -> Callable[[Request, BearerCredentials], Awaitable[Principal]]:
    async def dependency(request: Request, credentials: BearerCredentials) -> Principal:
        return await authorize(
            request, None if credentials is None else credentials.credentials, scope
        )

    return dependency


def bearer_token(request: Request) -> str | None:
    """The key of `Authorization: Bearer <key>`, as the `bearer` dependency reads it."""
    scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    return token if scheme.lower() == "bearer" and token else None


async def authorize(request: Request, token: str | None, scope: Scope) -> Principal:
    """The caller's key, checked for `scope` and counted against its rate limit."""
    if token is None:
        raise Unauthorized(
            "Send 'Authorization: Bearer <key>'.", headers={"WWW-Authenticate": "Bearer"}
        )
    authenticator: Authenticator = request.app.state.authenticator
    try:
        principal = await authenticator.authenticate(token)
    except Unauthorized as exc:
        exc.headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
        raise
    request.state.api_key_prefix = principal.prefix
    if scope not in principal.scopes:
        raise Forbidden(f"This endpoint needs an API key with the '{scope}' scope.")
    limiter: RateLimiter = request.app.state.rate_limiter
    limiter.check("ingest" if scope is Scope.INGEST else "read", principal.prefix)
    return principal


IngestKey = Annotated[Principal, Depends(require_scope(Scope.INGEST))]
ReadKey = Annotated[Principal, Depends(require_scope(Scope.READ))]
ManageKey = Annotated[Principal, Depends(require_scope(Scope.MANAGE))]
