"""Engine set-up for SQLite and PostgreSQL, read connections, and retried write transactions."""

from __future__ import annotations

import asyncio
import functools
import random
from collections import namedtuple
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from orgplane.db.grouped import TransactionGroups, group_of

T = TypeVar("T")

# PostgreSQL SQLSTATEs after which the whole transaction can simply be run again.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}
MAX_ATTEMPTS = 6


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# Session settings of every orgplane connection to PostgreSQL. orgplane's statements are short
# index lookups: JIT compilation only adds to them (it added 0.7 s to one plan of the
# descendants' audit log), and the default random_page_cost (4, for spinning disks) made the
# planner walk the primary key of a million orgs for a first page of children (90-140 ms)
# instead of the (parent_id, id) index (0.24 ms). 1.1 is the usual value for SSD storage.
PG_SERVER_SETTINGS = {"jit": "off", "random_page_cost": "1.1"}


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url, json_serializer=_json_dumps, json_deserializer=orjson.loads
        )
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        connect_args={"server_settings": PG_SERVER_SETTINGS},
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, foreign keys, a busy timeout, and explicit BEGIN so writers can take the lock up front.

    pysqlite's own transaction handling defers BEGIN and cannot start a write transaction with
    ``BEGIN IMMEDIATE``; without it, two readers that both try to write deadlock into SQLITE_BUSY.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Reader(Protocol):
    """What read paths use: execute a Core statement and get a buffered result."""

    async def execute(self, statement: Any, params: Any = None, /) -> Any: ...


def reads_postgres(conn: Reader) -> bool:
    """Whether ``conn`` (a ``Database.read`` reader or a transaction's connection) reads
    PostgreSQL: for the few statements written differently for each database's planner."""
    if isinstance(conn, PostgresReader):
        return True
    dialect = getattr(conn, "dialect", None)
    return dialect is not None and dialect.name == "postgresql"


@dataclass(frozen=True, slots=True)
class _Plan:
    """A statement compiled for one dialect: its SQL, its parameters in order, its row type."""

    sql: str
    names: tuple[str, ...]
    # Values of the binds the statement fixes itself (e.g. SQLite's OFFSET 0 after a LIMIT).
    defaults: Mapping[str, Any]
    binders: tuple[Callable[[Any], Any] | None, ...]
    row: Any  # a namedtuple class
    processors: tuple[Callable[[Any], Any] | None, ...]
    # The columns that have a result processor, by position: most have none.
    processed: tuple[tuple[int, Callable[[Any], Any]], ...] = ()

    def __post_init__(self) -> None:
        processed = tuple((i, p) for i, p in enumerate(self.processors) if p is not None)
        object.__setattr__(self, "processed", processed)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        values = [params[n] if n in params else self.defaults[n] for n in self.names]
        return [b(v) if b else v for v, b in zip(values, self.binders, strict=True)]

    def make_row(self, raw: Sequence[Any]) -> Any:
        if not self.processed:
            return self.row._make(raw)
        values = list(raw)
        for i, process in self.processed:
            values[i] = process(values[i])
        return self.row._make(values)


class PreparedSelect:
    """A Core SELECT compiled once per dialect and run straight on the driver's connection.

    For the few statements on every request's path: SQLAlchemy's execution of a statement costs
    ~100 µs of CPU, the driver's ~20. Rows come back as named tuples with the same attribute
    names and the same Python values (each column type's result processing is applied); the
    driver caches the prepared statement (asyncpg) or the parsed one (sqlite3). A textual
    statement with its columns (``sa.text(...).columns(...)``) works too, and ``Tx.fetch`` runs
    one that locks or writes inside a write transaction.
    """

    def __init__(self, statement: sa.Select[Any] | sa.TextualSelect) -> None:
        self.statement = statement
        self._plans: dict[str, _Plan] = {}

    def plan(self, dialect: sa.Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            plan = self._plans[dialect.name] = self._compile(dialect)
        return plan

    def _compile(self, dialect: sa.Dialect) -> _Plan:
        compiled = self.statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        bind_processors: Mapping[str, Any] = compiled._bind_processors
        columns = list(self.statement.selected_columns)
        return _Plan(
            sql=str(compiled),
            names=names,
            defaults={n: v for n, v in compiled.params.items() if v is not None},
            binders=tuple(bind_processors.get(n) for n in names),
            row=namedtuple("Row", [c.key for c in columns]),  # type: ignore[misc]
            processors=tuple(_result_processor(c.type, dialect) for c in columns),
        )


# asyncpg's Numeric and Float pick their result processing by the type oid of the column read,
# known here only by its SQLAlchemy type: NUMERIC's, or DOUBLE PRECISION's for a Float.
_PG_NUMERIC_OID = 1700
_PG_FLOAT8_OID = 701


def _result_processor(type_: Any, dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    impl = type_.dialect_impl(dialect)
    coltype = None
    if dialect.name == "postgresql" and isinstance(impl, (sa.Numeric, sa.Float)):
        coltype = _PG_FLOAT8_OID if isinstance(impl, sa.Float) else _PG_NUMERIC_OID
    processor: Callable[[Any], Any] | None = impl.result_processor(dialect, coltype)
    return processor


async def first(conn: Any, prepared: PreparedSelect, params: Mapping[str, Any]) -> Any:
    """The first row of ``prepared`` or None: on the driver for a read connection and for a
    PostgreSQL transaction's connection (asyncpg runs it inside the transaction), through
    SQLAlchemy otherwise (an aiosqlite transaction lives on its own thread)."""
    if isinstance(conn, (SyncReader, PostgresReader)):
        return await conn.first(prepared, params)
    if isinstance(conn, AsyncConnection) and conn.dialect.name == "postgresql":
        driver = (await conn.get_raw_connection()).driver_connection
        return await _fetch_first(driver, prepared.plan(conn.dialect), params)
    return (await conn.execute(prepared.statement, params)).first()


async def all_rows(conn: Any, prepared: PreparedSelect, params: Mapping[str, Any]) -> list[Any]:
    """Every row of ``prepared``: on the driver for a read connection, through SQLAlchemy
    otherwise."""
    if isinstance(conn, (SyncReader, PostgresReader)):
        return await conn.all(prepared, params)
    return list((await conn.execute(prepared.statement, params)).all())


async def _fetch_first(driver: Any, plan: _Plan, params: Mapping[str, Any]) -> Any:
    raw = await driver.fetchrow(plan.sql, *plan.args(params))
    return None if raw is None else plan.make_row(raw)


class SyncReader:
    """Runs statements on a synchronous connection; the result is fully buffered on return.

    Several requests may hold a reader on the one connection at once (a streamed export, say);
    buffering every result before control returns to the event loop keeps them apart.
    """

    __slots__ = ("_conn", "_raw")

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self._raw: Any = None

    async def execute(self, statement: Any, params: Any = None) -> Any:
        return self._conn.execute(statement, params).freeze()()

    async def first(self, prepared: PreparedSelect, params: Mapping[str, Any]) -> Any:
        if self._raw is None:
            self._raw = self._conn.connection.dbapi_connection
        plan = prepared.plan(self._conn.dialect)
        raw = self._raw.execute(plan.sql, plan.args(params)).fetchone()
        return None if raw is None else plan.make_row(raw)

    async def all(self, prepared: PreparedSelect, params: Mapping[str, Any]) -> list[Any]:
        if self._raw is None:
            self._raw = self._conn.connection.dbapi_connection
        plan = prepared.plan(self._conn.dialect)
        return [plan.make_row(r) for r in self._raw.execute(plan.sql, plan.args(params))]


class PostgresReader:
    """PostgreSQL reads in autocommit: ``first``/``all`` on a connection of the database's own
    asyncpg read pool, ``execute`` (SQLAlchemy statements) on one of the engine's. Each is
    checked out on first use and returned when the read ends, so the hot reads (prepared,
    on the driver) never pay for SQLAlchemy's connection handling."""

    __slots__ = ("_conn", "_db", "_driver", "_sa_context")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._driver: Any = None
        self._conn: AsyncConnection | None = None
        self._sa_context: Any = None

    async def execute(self, statement: Any, params: Any = None) -> Any:
        if self._conn is None:
            self._sa_context = self._db.engine.connect()
            conn = await self._sa_context.__aenter__()
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return await self._conn.execute(statement, params)

    async def _read_driver(self) -> Any:
        if self._driver is None:
            self._driver = await (await self._db.read_pool()).acquire()
        return self._driver

    async def first(self, prepared: PreparedSelect, params: Mapping[str, Any]) -> Any:
        driver = self._driver or await self._read_driver()
        return await _fetch_first(driver, prepared.plan(self._db.engine.dialect), params)

    async def all(self, prepared: PreparedSelect, params: Mapping[str, Any]) -> list[Any]:
        driver = self._driver or await self._read_driver()
        plan = prepared.plan(self._db.engine.dialect)
        return [plan.make_row(r) for r in await driver.fetch(plan.sql, *plan.args(params))]

    async def close(self) -> None:
        try:
            if self._driver is not None:
                pool = await self._db.read_pool()
                await pool.release(self._driver)
                self._driver = None
        finally:
            if self._sa_context is not None:
                context, self._sa_context, self._conn = self._sa_context, None, None
                await context.__aexit__(None, None, None)


async def _json_codecs(connection: Any) -> None:
    """JSON for the read pool: parameters as text (as the column types serialize them), results
    decoded by orjson straight from the text form. SQLAlchemy's asyncpg dialect reads JSONB in
    the binary form (a version byte, then the same text) through a wrapper that cuts the byte
    off: a call and a copy more per value, 300 of them in a page of 100 orgs. The values are
    the same either way."""
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=_identity, decoder=orjson.loads, schema="pg_catalog", format="text"
        )


def _identity(text: str) -> str:
    return text


async def _keep_session(connection: Any) -> None:
    """The read pool's reset: nothing (see ``Database.read_pool``)."""


def _sqlite_read_engine(url: str) -> sa.Engine:
    sync_url = sa.make_url(url).set(drivername="sqlite+pysqlite")
    engine = sa.create_engine(
        sync_url,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        # Only the event loop's thread uses it, one statement at a time.
        poolclass=sa.pool.StaticPool,
        connect_args={"check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # autocommit: no BEGIN, nothing to roll back
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    return engine


@dataclass
class Tx:
    """One write transaction: its connection and the audit entries to append before commit."""

    conn: AsyncConnection
    dialect: str
    pending_audit: list[dict[str, Any]] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    # Shared by several callers' work (``db.grouped``): nothing may assume it is alone in it.
    grouped: bool = False
    _driver: Any = field(default=None, repr=False)
    _keys_forgotten: Callable[[frozenset[str] | None], None] | None = field(
        default=None, repr=False
    )

    def forget_keys(self, key_hashes: Iterable[str] | None = None) -> None:
        """After commit, drop these keys (None: every key) from the process's key cache: for
        the commands that revoke a key or change what a key may do (its org's status, its
        user). Other processes see the change when their cache entries expire."""
        if self._keys_forgotten is None:
            return
        forget = self._keys_forgotten
        hashes = None if key_hashes is None else frozenset(key_hashes)
        self.after_commit.append(lambda: forget(hashes))

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    async def execute(self, statement: Any, params: Any = None) -> sa.CursorResult[Any]:
        return await self.conn.execute(statement, params)

    async def fetch(self, prepared: PreparedSelect, params: Mapping[str, Any]) -> list[Any]:
        """Every row of ``prepared`` (which may lock or write: a SELECT ... FOR UPDATE, a
        data-modifying WITH) run in this transaction: on the driver on PostgreSQL, through
        SQLAlchemy otherwise. The driver's errors come as they are (``Database.transaction``
        retries deadlocks and serialization failures all the same)."""
        if not self.is_postgres:
            return list((await self.conn.execute(prepared.statement, params)).all())
        plan = prepared.plan(self.conn.dialect)
        rows = await (await self._transaction_driver()).fetch(plan.sql, *plan.args(params))
        return [plan.make_row(r) for r in rows]

    async def insert_many(self, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (each naming the same columns). On PostgreSQL one statement on the
        driver, whatever their number (``INSERT ... SELECT FROM unnest`` of one array per
        column): SQLAlchemy's executemany costs ~10 µs of CPU per row and the database one
        execution per row. The values go to the driver as they are, without the columns' type
        processing: for columns of plain values (numbers, text, aware datetimes)."""
        if not rows:
            return
        if not self.is_postgres:
            await self.conn.execute(sa.insert(table), list(rows))
            return
        names = tuple(rows[0])
        sql = _insert_many_sql(table, names)
        columns = [[row[name] for row in rows] for name in names]
        await (await self._transaction_driver()).execute(sql, *columns)

    async def driver_execute(self, sql: str, *args: Any) -> str:
        """PostgreSQL: one statement with positional parameters (``$1``...) on the driver, in
        this transaction (prepared and cached by asyncpg). Its status (``UPDATE 3``)."""
        status: str = await (await self._transaction_driver()).execute(sql, *args)
        return status

    async def run_script(self, sql: str) -> None:
        """PostgreSQL: statements without parameters (``;``-separated) in one round trip, on
        the driver, in this transaction."""
        await (await self._transaction_driver()).execute(sql)

    async def _transaction_driver(self) -> Any:
        if self._driver is None:
            fairy = await self.conn.get_raw_connection()
            adapted: Any = fairy.dbapi_connection
            if adapted._transaction is None:
                # SQLAlchemy sends BEGIN lazily, with its first statement: a statement sent to
                # the driver before it would run, and commit, on its own.
                await adapted._start_transaction()
            self._driver = fairy.driver_connection
        return self._driver


@functools.lru_cache(maxsize=64)
def _insert_many_sql(table: sa.Table, names: tuple[str, ...]) -> str:
    dialect = postgresql.dialect()
    arrays = ", ".join(
        f"${i}::{table.c[name].type.compile(dialect=dialect)}[]"
        for i, name in enumerate(names, start=1)
    )
    return f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays})"


class Database:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        # SQLite has one writer; queueing writers here is cheaper than spinning on SQLITE_BUSY.
        self._sqlite_write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._sqlite_reads = _sqlite_read_engine(url) if self.dialect == "sqlite" else None
        self._sqlite_read_conn: sa.Connection | None = None
        self._pool_size = pool_size
        self._read_pool: Any = None
        self._read_pool_lock = asyncio.Lock()
        # Called with the Tx just before commit: appends the audit entries (set by the app).
        self.before_commit: Callable[[Tx], Awaitable[None]] | None = None
        # Called after a commit with the key hashes a command asked to forget (``Tx.forget_keys``;
        # None: all of them): the app's key cache, set by the app.
        self.keys_forgotten: Callable[[frozenset[str] | None], None] | None = None
        # Called after a commit that appended audit entries (events): the in-process webhook
        # worker and NATS sink wake on it instead of waiting for their next poll.
        self.events_committed: list[Callable[[], None]] = []
        self._groups = TransactionGroups(self, retryable)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._read_pool is not None:
            pool, self._read_pool = self._read_pool, None
            await pool.close()
        if self._sqlite_read_conn is not None:
            self._sqlite_read_conn.close()
            self._sqlite_read_conn = None
        if self._sqlite_reads is not None:
            self._sqlite_reads.dispose()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Reader]:
        """A connection for reads, in autocommit: each statement sees the latest commit.

        On SQLite it is a synchronous pysqlite connection used on the event loop's thread: a
        sub-millisecond indexed read costs less than aiosqlite's hop to its worker thread, and
        WAL readers do not wait for writers. On PostgreSQL, autocommit saves the BEGIN and
        ROLLBACK round trips around every read.
        """
        if self._sqlite_reads is not None:
            if self._sqlite_read_conn is None:
                self._sqlite_read_conn = self._sqlite_reads.connect()
            try:
                yield SyncReader(self._sqlite_read_conn)
            finally:
                # Ends SQLAlchemy's bookkeeping; pysqlite in autocommit has nothing to undo.
                self._sqlite_read_conn.rollback()
            return
        reader = PostgresReader(self)
        try:
            yield reader
        finally:
            await reader.close()

    async def read_pool(self) -> Any:
        """PostgreSQL: the asyncpg pool of the prepared reads, made on first use, as large as the
        engine's pool at its largest (``pool_size`` + as many overflow): at 32 connections a
        worker's GET /orgs/{id} queued on 10 read connections (5,200 -> 5,800 requests/s and
        p99 14 -> 12 ms with 20). Its connections decode JSON with ``_json_codecs``.
        A connection comes back without asyncpg's reset query (a round trip per read): these
        connections only ever run SELECTs in autocommit, so there is no session state to reset.
        """
        if self._read_pool is None:
            async with self._read_pool_lock:
                if self._read_pool is None:
                    dsn = self.engine.url.set(drivername="postgresql")
                    self._read_pool = await asyncpg.create_pool(
                        dsn.render_as_string(hide_password=False),
                        min_size=1,
                        max_size=2 * self._pool_size,
                        server_settings=PG_SERVER_SETTINGS,
                        init=_json_codecs,
                        reset=_keep_session,
                    )
        return self._read_pool

    async def transaction(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(tx, *args, **kwargs)`` in one write transaction and commit it.

        PostgreSQL deadlocks and serialization failures roll back and run ``fn`` again, so ``fn``
        must do nothing outside the database that cannot be repeated. A command marked with
        ``db.grouped.grouped_by`` runs in its group: its transaction may be shared (and its
        commit) with the calls of the same group waiting at the same time.
        """
        group = group_of(fn, args, kwargs)
        if group is not None:
            return await self._groups.run(group, fn, *args, **kwargs)
        return await self.transaction_alone(fn, *args, **kwargs)

    async def transaction_alone(
        self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        """``transaction`` in a transaction of its own, whatever ``fn``'s group."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await self._run_once(fn, *args, **kwargs)
            except Exception as exc:
                # SQLAlchemy's errors, and the driver's own from statements run on it directly.
                if attempt == MAX_ATTEMPTS or not retryable(exc):
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")

    async def transaction_grouped(
        self, group: Hashable, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        """``transaction(fn, ...)`` in the named ``group`` (``db.grouped``), whatever ``fn``
        declares: the mechanism behind ``grouped_by``."""
        return await self._groups.run(group, fn, *args, **kwargs)

    async def _run_once(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if self._sqlite_write_lock is not None:
            async with self._sqlite_write_lock:
                return await self._run_in_connection(fn, *args, **kwargs)
        return await self._run_in_connection(fn, *args, **kwargs)

    async def _run_in_connection(
        self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = await conn.execution_options(sqlite_immediate=True)
            async with conn.begin():
                tx = Tx(conn=conn, dialect=self.dialect, _keys_forgotten=self.keys_forgotten)
                result = await fn(tx, *args, **kwargs)
                appended = bool(tx.pending_audit)
                if self.before_commit is not None:
                    await self.before_commit(tx)
        for callback in tx.after_commit:
            callback()
        if appended:
            for listener in self.events_committed:
                listener()
        return result


def retryable(exc: Exception) -> bool:
    """A PostgreSQL deadlock or serialization failure: the transaction can run again."""
    return _sqlstate(exc) in _RETRYABLE_SQLSTATES


def _sqlstate(exc: Exception) -> str | None:
    orig = getattr(exc, "orig", None)
    for candidate in (exc, orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if code:
            return str(code)
    return None
