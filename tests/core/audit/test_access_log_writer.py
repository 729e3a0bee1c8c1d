"""The access log's writer keeps every entry when a flush is cancelled half-way: at shutdown
(the timer's task is cancelled while it writes) and when the request that asked for a flush
goes away."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from orgplane.core.audit.access_log import AccessLogWriter
from orgplane.db.engine import Database
from orgplane.models import access_log

ROWS = 20_000


def _record(writer: AccessLogWriter, count: int) -> None:
    for i in range(count):
        writer.record(
            actor="key:k1", action="AUTH", status="SUCCESS", path=f"/orgs/{i}", ip="127.0.0.1"
        )


async def _count(db: Database) -> int:
    async with db.read() as conn:
        count = sa.select(sa.func.count()).select_from(access_log)
        return int((await conn.execute(count)).scalar())


async def _until_writing(writer: AccessLogWriter) -> None:
    """Until a flush holds the writer's lock: the batch is taken and being written."""
    for _ in range(2000):
        if writer._lock.locked():
            return
        await asyncio.sleep(0.0005)
    raise AssertionError("no flush started")


async def test_stop_during_a_timed_flush_loses_nothing(db_url):
    db = Database(db_url)
    writer = AccessLogWriter(db, flush_seconds=0.001)
    try:
        _record(writer, ROWS)
        writer.start()
        await _until_writing(writer)
        _record(writer, 10)  # buffered while the batch is written: the last flush takes them
        await asyncio.wait_for(writer.stop(), 30)
        assert await _count(db) == ROWS + 10
    finally:
        await db.dispose()


async def test_a_cancelled_caller_does_not_cancel_the_write(db_url):
    db = Database(db_url)
    writer = AccessLogWriter(db, flush_seconds=3600)
    try:
        _record(writer, ROWS)
        caller = asyncio.create_task(writer.flush())
        await _until_writing(writer)
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        await asyncio.wait_for(writer.flush(), 30)  # waits for the write under way
        assert await _count(db) == ROWS
    finally:
        await db.dispose()
