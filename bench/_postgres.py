"""The benchmarks' PostgreSQL database: a throw-away one on 127.0.0.1, emptied per run."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import asyncpg

HOST = "127.0.0.1"


def asyncpg_url(url: str) -> str:
    """The plain libpq-style URL asyncpg takes; refuses anything not on 127.0.0.1."""
    plain = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)
    if urlsplit(plain).hostname != HOST:
        raise ValueError(f"the benchmark only connects to {HOST}, not {url!r}")
    return plain


async def reset_postgres(url: str) -> None:
    """Empty the benchmark's database, creating it on first use."""
    plain = asyncpg_url(url)
    try:
        connection = await asyncpg.connect(plain, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        name = urlsplit(plain).path.lstrip("/")
        admin = await asyncpg.connect(plain.rsplit("/", 1)[0] + "/postgres", timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        connection = await asyncpg.connect(plain, timeout=5)
    try:
        await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await connection.close()
