"""The access log: every authentication attempt, buffered in memory and written in batches.

Writing a row per request inline would put a write on every read; instead rows (and keys'
last-used times) are flushed every ``flush_seconds`` with one batched insert, and on shutdown.
Readers of the log call ``flush()`` first, so a process always sees its own entries.

A busy worker buffers thousands of rows between flushes: they are kept as tuples and the insert
goes to the driver with the statement compiled once (SQLAlchemy's per-row parameter handling
cost ~15 µs a row, a tenth of a cached API read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orgplane.db.engine import Database, Tx
from orgplane.models import access_log, credentials
from orgplane.models.base import utcnow

log = logging.getLogger(__name__)
MAX_BUFFER = 100_000

# A buffered row's values, in the table's order (the insert's parameters come in that order).
COLUMNS = tuple(c.name for c in access_log.c if c.name != "id")
_AT = COLUMNS.index("at")
_INSERT = sa.insert(access_log).values({name: sa.bindparam(name) for name in COLUMNS}).inline()


class AccessLogWriter:
    def __init__(self, db: Database, flush_seconds: float) -> None:
        self.db = db
        self.flush_seconds = flush_seconds
        self._rows: list[tuple[Any, ...]] = []
        self._last_used: dict[int, datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._flushing: set[asyncio.Future[None]] = set()  # referenced until they finish

    def record(
        self,
        *,
        actor: str,
        action: str,
        status: str,
        org_id: int | None = None,
        root_id: int | None = None,
        key_id: str | None = None,
        key_pk: int | None = None,
        user_id: int | None = None,
        method: str | None = None,
        path: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        detail: str | None = None,
    ) -> None:
        now = utcnow()
        if len(self._rows) >= MAX_BUFFER:
            # The database is not keeping up; dropping is better than exhausting memory.
            log.warning("access log buffer full; dropping an entry")
            return
        self._rows.append(
            (
                root_id,
                org_id,
                now,
                _text(actor, 200) or "",
                key_id,
                user_id,
                action,
                status,
                method,
                _text(path, 400),
                ip,
                _text(user_agent, 400),
                detail,
            )
        )
        if key_pk is not None and status == "SUCCESS":
            self._last_used[key_pk] = now

    async def flush(self) -> None:
        """Write what is buffered. A caller cancelled meanwhile (a client that went away, the
        flush timer stopped at shutdown) does not stop the write: cancelled half-way, the batch
        would be lost and the connection left in the middle of its insert."""
        flushing = asyncio.ensure_future(self._flush())
        self._flushing.add(flushing)
        flushing.add_done_callback(self._flushing.discard)
        await asyncio.shield(flushing)

    async def _flush(self) -> None:
        async with self._lock:
            rows, self._rows = self._rows, []
            last_used, self._last_used = self._last_used, {}
            if not rows and not last_used:
                return
            try:
                await self.db.transaction(_write, rows, last_used)
            except Exception:
                log.exception(
                    "access log flush failed; %d entries kept for the next try", len(rows)
                )
                self._rows[:0] = rows
                for key, value in last_used.items():
                    self._last_used.setdefault(key, value)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="orgplane-access-log")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # The last batch, after any flush the timer had under way (it holds the lock).
        await self.flush()


def _text(value: Any, limit: int) -> Any:
    """Client-supplied text, cut to ``limit``. PostgreSQL text cannot hold NUL, and one such row
    would fail every later flush of the batch it sits in, so NUL is replaced."""
    if not value:
        return None
    return str(value)[:limit].replace("\x00", "\ufffd")


_plans: dict[str, tuple[str, Any]] = {}


def _insert_plan(dialect: sa.Dialect) -> tuple[str, Any]:
    """The insert's SQL for ``dialect`` and the time column's bind processing (the only
    column that has any)."""
    plan = _plans.get(dialect.name)
    if plan is None:
        compiled = _INSERT.compile(dialect=dialect)
        assert tuple(compiled.positiontup or ()) == COLUMNS, compiled.positiontup
        plan = _plans[dialect.name] = (str(compiled), compiled._bind_processors.get("at"))
    return plan


async def _write(tx: Tx, rows: list[tuple[Any, ...]], last_used: dict[int, datetime]) -> None:
    if rows:
        sql, bind_at = _insert_plan(tx.conn.dialect)
        if bind_at is not None:
            rows = [(*row[:_AT], bind_at(row[_AT]), *row[_AT + 1 :]) for row in rows]
        await tx.conn.exec_driver_sql(sql, rows)
    if last_used:
        await tx.execute(
            sa.update(credentials)
            .where(credentials.c.id == sa.bindparam("key_pk"))
            .values(last_used_at=sa.bindparam("used_at")),
            [{"key_pk": k, "used_at": v} for k, v in sorted(last_used.items())],
        )
