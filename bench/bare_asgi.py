"""The machine's ceiling: a bare ASGI app doing what orgplane's hot path does, and nothing else.

Serve it with granian, as ``bench/quick.py`` does::

    BARE_DATABASE=/path/to/orgplane.db granian --interface asgi --port 8041 bare_asgi:app

``GET /hello`` returns a fixed JSON body. ``GET /orgs/{public_id}`` checks
``Authorization: Bearer <key>`` by a dict lookup of the key's sha256 (the keys are loaded once at
start-up from orgplane's ``credentials`` table), reads one org row by ``public_id`` (joined to its
parent for the parent's public id, as orgplane does), tests that the org is inside the key's
subtree with a path prefix, and returns the row as JSON with orjson.

The database is orgplane's own: SQLite through the raw ``sqlite3`` module when ``BARE_DATABASE``
is a file path, PostgreSQL through an asyncpg pool when it is a ``postgresql://`` DSN.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from typing import Any

import orjson

HELLO = orjson.dumps({"ok": True})
NOT_FOUND = orjson.dumps({"status": 404, "detail": "not found"})
UNAUTHORIZED = orjson.dumps({"status": 401, "detail": "bad credentials"})
JSON_HEADERS = [(b"content-type", b"application/json")]
JSON_COLUMNS = ("tags", "settings", "customizations")

ORG_SQL = """
SELECT o.id, o.uuid, o.public_id, o.path, o.name, o.description, o.status, o.deployment,
       o.country, o.timezone, o.plan, o.depth, o.tags, o.settings, o.customizations,
       o.created_at, o.modified_at, o.deleted_at, o.version, p.public_id AS parent_public_id
FROM orgs AS o LEFT OUTER JOIN orgs AS p ON p.id = o.parent_id
WHERE o.public_id = {param}
"""
KEYS_SQL = """
SELECT c.key_hash, o.path
FROM credentials AS c JOIN orgs AS o ON o.id = c.org_id
WHERE c.revoked_at IS NULL AND o.deleted_at IS NULL
"""


class SqliteStore:
    """One sqlite3 connection, used from the event loop's thread (a query takes microseconds)."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=10000")
        self.conn.row_factory = sqlite3.Row
        self.sql = ORG_SQL.format(param="?")

    async def keys(self) -> dict[str, str]:
        return {row["key_hash"]: row["path"] for row in self.conn.execute(KEYS_SQL)}

    async def org(self, public_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(self.sql, (public_id,)).fetchone()
        if row is None:
            return None
        org = dict(row)
        for column in JSON_COLUMNS:
            org[column] = orjson.loads(org[column])
        return org

    async def close(self) -> None:
        self.conn.close()


class PostgresStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: Any = None
        self.sql = ORG_SQL.format(param="$1")

    async def open(self) -> None:
        import asyncpg

        async def init(conn: Any) -> None:
            for codec in ("json", "jsonb"):
                await conn.set_type_codec(
                    codec,
                    encoder=lambda v: orjson.dumps(v).decode(),
                    decoder=orjson.loads,
                    schema="pg_catalog",
                )

        self.pool = await asyncpg.create_pool(self.dsn, min_size=2, max_size=10, init=init)

    async def keys(self) -> dict[str, str]:
        async with self.pool.acquire() as conn:
            return {row["key_hash"]: row["path"] for row in await conn.fetch(KEYS_SQL)}

    async def org(self, public_id: str) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(self.sql, public_id)
        return dict(row) if row is not None else None

    async def close(self) -> None:
        await self.pool.close()


def _store() -> SqliteStore | PostgresStore:
    target = os.environ.get("BARE_DATABASE", "orgplane.db")
    if target.startswith(("postgresql://", "postgres://")):
        return PostgresStore(target)
    return SqliteStore(target)


store = _store()
key_paths: dict[str, str] = {}


def _bearer(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, secret = value.decode("latin-1").partition(" ")
            return secret.strip() if scheme.lower() == "bearer" else None
    return None


async def _send(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if isinstance(store, PostgresStore):
                await store.open()
            key_paths.update(await store.keys())
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await store.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/hello":
        await _send(send, 200, HELLO)
        return
    if not path.startswith("/orgs/"):
        await _send(send, 404, NOT_FOUND)
        return
    secret = _bearer(scope)
    reach = key_paths.get(hashlib.sha256(secret.encode()).hexdigest()) if secret else None
    if reach is None:
        await _send(send, 401, UNAUTHORIZED)
        return
    org = await store.org(path[len("/orgs/") :])
    if org is None or org["deleted_at"] is not None or not org["path"].startswith(reach):
        await _send(send, 404, NOT_FOUND)
        return
    org["id"], org["key"] = org.pop("public_id"), org["id"]
    org["parent_id"] = org.pop("parent_public_id")
    del org["path"]
    await _send(send, 200, orjson.dumps(org))
