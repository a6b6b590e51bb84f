"""Database engine, session factory and the column types shared by every model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import BigInteger, Connection, DateTime, Engine, Integer, MetaData, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import SingletonThreadPool
from sqlalchemy.types import TypeDecorator

from app.kit.migrations import upgrade
from app.kit.settings import Settings

T = TypeVar("T")
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes, always stored and returned in UTC.

    SQLite has no time zone type, so values are normalised to UTC before they are written
    and marked UTC when read; PostgreSQL stores them as `timestamptz`.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """Exact amounts with up to four decimal places, stored as integer ten-thousandths.

    SQLite has no exact decimal type (SQLAlchemy's Numeric goes through floats there); a
    scaled 64-bit integer is exact on both databases and sums correctly in SQL.
    """

    impl = BigInteger
    cache_ok = True
    SCALE = 10_000
    MAX_UNITS = 2**63 - 1  # the column's range, in 1/10,000
    MAX = Decimal(MAX_UNITS // SCALE)  # 922,337,203,685,477: every stored amount is below

    @classmethod
    def clamp(cls, value: float) -> Decimal:
        """A computed amount (a value at risk) as a storable one: cents, within range.
        No real customer comes near the bound; a hostile one must not break a loop."""
        if value != value:  # NaN
            return Decimal(0)
        return Decimal(str(round(min(max(value, 0.0), float(cls.MAX)), 2)))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        scaled = value * self.SCALE
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than four decimal places")
        return int(scaled)

    def process_result_value(self, value: int | None, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return (Decimal(value) / self.SCALE).normalize()


def _sqlite_path(url: str) -> Path | None:
    path = url.split("///", 1)[1] if "///" in url else ""
    if not path or path.startswith(":memory:"):
        return None
    return Path(path.split("?", 1)[0])


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# JSON columns (alert evidence, the change feed) through orjson: the standard library's
# encoder was a visible share of writing a sweep's alerts. A failed statement's error text
# leaves out its parameters: they hold events, receivers' answers and webhook secrets, and
# that text reaches logs, tracebacks and set-aside items.
ENGINE_OPTIONS: dict[str, Any] = {
    "json_serializer": _json_dumps,
    "json_deserializer": orjson.loads,
    "hide_parameters": True,
}


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.database_url
    if settings.is_sqlite:
        return _create_sqlite_engine(settings)
    engine = create_async_engine(
        url,
        **ENGINE_OPTIONS,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=False,
        pool_timeout=settings.db_connect_timeout.total_seconds(),
        connect_args={
            "timeout": settings.db_connect_timeout.total_seconds(),
            # The ingest statements take whole batches as array parameters. A generic plan
            # (which PostgreSQL switches to after five runs of a prepared statement) cannot
            # see the array sizes and was measured choosing sequential scans of customers.
            # statement_timeout: a statement running away (a plan gone wrong, a lock never
            # released) is cancelled and answered 503 instead of holding its connection.
            "server_settings": {
                "plan_cache_mode": "force_custom_plan",
                "statement_timeout": str(int(settings.db_statement_timeout.total_seconds() * 1000)),
            },
            # SQLAlchemy's asyncpg adapter connects through this (its `async_creator` hook),
            # with the URL's parameters and these, as it would through asyncpg.connect.
            "async_creator_fn": _connect_asyncpg,
        },
    )
    _report_unavailable_as_operational(engine.sync_engine)
    return engine


async def _connect_asyncpg(*args: Any, **kwargs: Any) -> Any:
    """asyncpg.connect, where a server that does not answer within the timeout is a
    ConnectionError (503, like a refused connection), not the bare TimeoutError asyncpg
    raises (which would be a 500, like a bug)."""
    import asyncpg

    try:
        return await asyncpg.connect(*args, **kwargs)
    except TimeoutError as exc:
        raise ConnectionError(
            f"PostgreSQL did not answer within {kwargs.get('timeout')} s"
        ) from exc


# SQLSTATEs of a server that cannot serve right now: connection exceptions (class 08),
# shutting down or starting up (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03
# cannot_connect_now), and no connection slot left (53300 too_many_connections).
# 57014: a statement cancelled by statement_timeout, answered 503 like a database too busy.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "57014"})
_GONE_SQLSTATES = frozenset({"57P01", "57P02"})  # the connection is dead: discard the pool


def _unavailable_sqlstate(error: BaseException) -> str | None:
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and (
        sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES
    ):
        return sqlstate
    return None


def _report_unavailable_as_operational(engine: Engine) -> None:
    """Make "the database cannot be reached right now" one kind of error.

    SQLAlchemy's asyncpg dialect raises a plain `DBAPIError` for most server errors, among
    them a connection closed mid-statement, a server shutting down and one still starting up
    (57P03): they would be answered 500 like a bug. They become `OperationalError`, which the
    service answers 503 with Retry-After and its loops treat as a pause; and a connection
    the server terminated invalidates the pool, so that the other stale connections are not
    tried one request at a time once the server is back.
    """

    @event.listens_for(engine, "handle_error")
    def _translate(context: ExceptionContext) -> BaseException | None:
        error = context.sqlalchemy_exception
        if error is None or isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return None
        sqlstate = _unavailable_sqlstate(context.original_exception)
        if sqlstate is None and not context.is_disconnect:
            return None
        if sqlstate in _GONE_SQLSTATES or (sqlstate or "").startswith("08"):
            context.is_disconnect = True
        return sa_exc.OperationalError(
            context.statement,
            context.parameters,
            context.original_exception,
            connection_invalidated=context.is_disconnect,
        )


def _create_sqlite_engine(settings: Settings) -> AsyncEngine:
    path = _sqlite_path(settings.database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        settings.database_url,
        **ENGINE_OPTIONS,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        # pysqlite's own transaction handling is disabled so that BEGIN is ours (below).
        connect_args={"isolation_level": None, "check_same_thread": False},
    )
    _configure_sqlite(engine.sync_engine, settings.sqlite_synchronous)
    return engine


# Execution option of connections that only read (SQLite then begins without the write lock).
READ_ONLY = "radar_read_only"


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            f"synchronous={synchronous}",
            "foreign_keys=ON",
            "busy_timeout=10000",
            "temp_store=MEMORY",
            "cache_size=-65536",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that reads and then writes
        # can fail with SQLITE_BUSY when another connection committed in between. Reads
        # (TransactionRunner.read) begin deferred: in WAL mode they never wait for a writer.
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


_NOTIFY = "radar_notify_after_commit"


def notify_after_commit(connection: Connection) -> None:
    """Ask the runner to call its `after_commit` hooks once this transaction has committed
    (say, deliveries were queued: the dispatcher of this process need not wait to poll)."""
    connection.info[_NOTIFY] = True


def _with_notice(connection: Connection, work: Callable[[Connection], T]) -> tuple[T, bool]:
    # `info` belongs to the pooled DBAPI connection and outlives the transaction: the flag
    # is taken off before the connection goes back to the pool, even when `work` fails.
    # A connection the failure invalidated (the server went away) is discarded with its
    # `info`, and touching it then would raise over the error that says what happened.
    try:
        return work(connection), bool(connection.info.get(_NOTIFY))
    finally:
        if not connection.invalidated:
            connection.info.pop(_NOTIFY, None)


class TransactionRunner:
    """Runs a synchronous function in one transaction, committed before it returns.

    The ingest hot path is written against a plain `Connection` and run here. On PostgreSQL
    it runs on the async engine through SQLAlchemy's greenlet bridge (`run_sync`). On SQLite
    the whole transaction runs in one dedicated thread on a synchronous connection: one
    hand-off per transaction instead of one per statement, each of which waits for a turn on
    a busy event loop.
    """

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self.after_commit: list[Callable[[], None]] = []
        self._sync_engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None
        if settings.is_sqlite:
            self._sync_engine = sa_create_engine(
                settings.database_url.replace("+aiosqlite", ""),
                **ENGINE_OPTIONS,
                poolclass=SingletonThreadPool,
                connect_args={"isolation_level": None},
            )
            _configure_sqlite(self._sync_engine, settings.sqlite_synchronous)
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in a transaction and commit; then call the `after_commit` hooks if
        the work asked for it (`notify_after_commit`)."""
        if self._sync_engine is None:
            async with self._engine.begin() as connection:
                result, notify = await connection.run_sync(_with_notice, work)
        else:
            loop = asyncio.get_running_loop()
            result, notify = await loop.run_in_executor(self._executor, self._run_sync, work)
        if notify:
            for hook in self.after_commit:
                hook()
        return result

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run read-only synchronous work on a pooled connection of the async engine."""
        async with self._engine.connect() as connection:
            reader = await connection.execution_options(**{READ_ONLY: True})
            return await reader.run_sync(work)

    def _run_sync(self, work: Callable[[Connection], T]) -> tuple[T, bool]:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as connection:
            return _with_notice(connection, work)

    async def close(self) -> None:
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            assert self._sync_engine is not None
            # Connections of a SingletonThreadPool belong to their thread: close them there.
            await loop.run_in_executor(self._executor, self._sync_engine.dispose)
            self._executor.shutdown(wait=True)


@asynccontextmanager
async def open_transactions(settings: Settings) -> AsyncIterator[TransactionRunner]:
    """A TransactionRunner on the configured database for a command (migrated first unless
    RADAR_MIGRATE_ON_START is off), closed with its engine afterwards."""
    engine = create_engine(settings)
    transactions = TransactionRunner(engine, settings)
    try:
        if settings.migrate_on_start:
            await upgrade(engine)
        yield transactions
    finally:
        await transactions.close()
        await engine.dispose()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """The one place a unit of work commits (on success) or rolls back (on any error)."""
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


def utcnow() -> datetime:
    return datetime.now(UTC)
