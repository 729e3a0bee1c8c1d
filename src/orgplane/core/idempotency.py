"""Idempotency-Key handling: the first response to a key is stored and replayed.

The key's row is inserted at the start of the request's transaction, so a concurrent duplicate
blocks on it (PostgreSQL) or queues behind it (SQLite) and then replays the stored response,
and a request that fails leaves no trace. Keys belong to the credential that sent them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from orgplane.core.errors import Conflict, InvalidInput, Unprocessable
from orgplane.db.engine import Reader, Tx
from orgplane.models import idempotency_keys
from orgplane.models.base import utcnow

MAX_KEY_LENGTH = 255


# Headers a replay repeats; others (request ids, rate limits) belong to the new request.
REPLAYED_HEADERS = ("etag", "location")


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: bytes
    headers: dict[str, str]


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidInput.for_field(
            "header.Idempotency-Key", f"must be 1 to {MAX_KEY_LENGTH} printable characters"
        )
    return key


async def lookup(
    conn: Reader, owner: str, key: str, fp: str, ttl_hours: int
) -> StoredResponse | None:
    row = (
        await conn.execute(
            sa.select(idempotency_keys).where(
                idempotency_keys.c.owner == owner, idempotency_keys.c.key == key
            )
        )
    ).first()
    if row is None or row.status_code == 0:
        return None
    if row.created_at < utcnow() - timedelta(hours=ttl_hours):
        return None
    if row.fingerprint != fp:
        raise Unprocessable(
            "this Idempotency-Key was already used for a different request",
            extra={"field": "header.Idempotency-Key"},
        )
    return StoredResponse(row.status_code, row.body, dict(row.headers or {}))


async def claim(tx: Tx, owner: str, key: str, fp: str, ttl_hours: int) -> StoredResponse | None:
    """Reserve ``key`` in this transaction, or return the response already stored for it.

    A request with the same key in flight elsewhere holds the key's row: the insert waits for
    it (PostgreSQL; SQLite has one writer) and, once it committed, this returns its response.
    """
    stored = await lookup(tx, owner, key, fp, ttl_hours)
    if stored is not None:
        return stored
    # An expired row is replaced.
    await tx.execute(
        sa.delete(idempotency_keys).where(
            idempotency_keys.c.owner == owner,
            idempotency_keys.c.key == key,
            idempotency_keys.c.created_at < utcnow() - timedelta(hours=ttl_hours),
        )
    )
    insert = (pg_insert if tx.is_postgres else sqlite_insert)(idempotency_keys)
    claimed = (
        await tx.execute(
            insert.values(
                owner=owner, key=key, fingerprint=fp, status_code=0, body=b"", created_at=utcnow()
            )
            .on_conflict_do_nothing(index_elements=["owner", "key"])
            .returning(idempotency_keys.c.key)
        )
    ).first()
    if claimed is not None:
        return None
    # The other request committed first (its row is visible to this new statement).
    stored = await lookup(tx, owner, key, fp, ttl_hours)
    if stored is None:
        raise Conflict("a request with this Idempotency-Key is still being processed; retry")
    return stored


async def complete(
    tx: Tx, owner: str, key: str, status_code: int, body: bytes, headers: dict[str, str]
) -> None:
    kept = {k: v for k, v in headers.items() if k.lower() in REPLAYED_HEADERS}
    await tx.execute(
        sa.update(idempotency_keys)
        .where(idempotency_keys.c.owner == owner, idempotency_keys.c.key == key)
        .values(status_code=status_code, body=body, headers=kept)
    )


async def purge_expired(tx: Tx, ttl_hours: int) -> int:
    result = await tx.execute(
        sa.delete(idempotency_keys).where(
            idempotency_keys.c.created_at < utcnow() - timedelta(hours=ttl_hours)
        )
    )
    return int(result.rowcount or 0)
