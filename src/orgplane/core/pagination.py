"""Opaque keyset cursors (base64url JSON of the last row's sort key), keyset batches, and the
time window a list is filtered by."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson

from orgplane.core.errors import InvalidInput

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str | None, *types: type) -> tuple[Any, ...] | None:
    """The sort key from a cursor, checked against the expected types, or a clear 400."""
    if cursor is None or cursor == "":
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidInput.for_field("query.cursor", "not a cursor returned by this API") from None
    if (
        not isinstance(values, list)
        or len(values) != len(types)
        or not all(
            isinstance(v, t) and not isinstance(v, bool) for v, t in zip(values, types, strict=True)
        )
        # A key no row can have, which PostgreSQL could not even compare: NUL in text.
        or any(isinstance(v, str) and "\x00" in v for v in values)
    ):
        raise InvalidInput.for_field("query.cursor", "not a cursor returned by this API")
    return tuple(values)


def utc_bound(value: datetime | None, field: str) -> datetime | None:
    """``value`` in UTC (naive means UTC), or a 400 naming ``field`` when no database can hold it
    (``0001-01-01T00:00:00+23:59`` is before year 1 in UTC)."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput.for_field(
            field, "must be a time between the years 1 and 9999 in UTC"
        ) from None


def time_window(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """``?since=&until=`` in UTC, ``since`` before ``until``, or a 400 naming the parameter."""
    since, until = utc_bound(since, "query.since"), utc_bound(until, "query.until")
    if since and until and since >= until:
        raise InvalidInput.for_field("query.since", "must be before query.until")
    return since, until


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput.for_field("query.limit", f"must be between 1 and {MAX_LIMIT}")
    return limit


async def newest_first_batches(
    conn: Any, statement: Any, id_column: Any, *, size: int = 1000
) -> AsyncIterator[list[Any]]:
    """Every row of ``statement``, newest first by ``id_column``, ``size`` rows a query: a
    whole filtered range streamed without holding it in memory or one long-running query."""
    before: int | None = None
    while True:
        batch_statement = statement if before is None else statement.where(id_column < before)
        batch = list(
            (await conn.execute(batch_statement.order_by(id_column.desc()).limit(size))).all()
        )
        if not batch:
            return
        yield batch
        if len(batch) < size:
            return
        before = batch[-1].id
