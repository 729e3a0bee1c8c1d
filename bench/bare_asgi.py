"""The machine's ceiling: a bare ASGI app doing what orgplane's hot paths do, and nothing else.

Serve it with granian, as ``bench/quick.py`` and ``bench/suite.py`` do::

    BARE_DATABASE=/path/to/orgplane.db granian --interface asgi --port 8041 bare_asgi:app

``GET /hello`` returns a fixed JSON body.

``GET /orgs/{public_id}`` checks ``Authorization: Bearer <key>`` by a dict lookup of the key's
sha256 (the live keys and their scopes are loaded once at start-up from orgplane's
``credentials`` table), reads one org row by ``public_id`` (joined to its parent for the parent's
public id, as orgplane does), tests that the org is inside the key's subtree with a path prefix
and that the key has ``orgs:read``, and returns the org with orgplane's fields, in orgplane's
order, encoded with orjson.

``GET /orgs/{public_id}/children?limit=100&cursor=...`` does what orgplane's children list does
with the raw driver: the same check of the key, the parent read the same way, then one query for
up to ``limit + 1`` live (not soft-deleted) children ordered by id after the cursor's id (joined
to the parent for its public id), and ``{"data": [...], "next_cursor": ...}`` with orgplane's
fields and its cursor format (base64url of ``[last id]``).

The database is orgplane's own: SQLite through the raw ``sqlite3`` module when ``BARE_DATABASE``
is a file path, PostgreSQL through an asyncpg pool when it is a ``postgresql://`` DSN.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
from typing import Any
from urllib.parse import parse_qs

import orjson

HELLO = orjson.dumps({"ok": True})
NOT_FOUND = orjson.dumps({"status": 404, "detail": "not found"})
UNAUTHORIZED = orjson.dumps({"status": 401, "detail": "bad credentials"})
FORBIDDEN = orjson.dumps({"status": 403, "detail": "missing scope orgs:read"})
BAD_REQUEST = orjson.dumps({"status": 400, "detail": "bad limit or cursor"})
JSON_HEADERS = [(b"content-type", b"application/json")]
JSON_COLUMNS = ("tags", "settings", "customizations")
TIME_COLUMNS = ("created_at", "modified_at", "deleted_at")
READ_SCOPES = {"*", "orgs:read"}
MAX_LIMIT = 1000

COLUMNS = """o.id, o.uuid, o.public_id, o.path, o.name, o.description, o.status, o.deployment,
       o.country, o.timezone, o.plan, o.depth, o.tags, o.settings, o.customizations,
       o.created_at, o.modified_at, o.deleted_at, o.version, p.public_id AS parent_public_id"""
ORG_SQL = f"""
SELECT {COLUMNS}
FROM orgs AS o LEFT OUTER JOIN orgs AS p ON p.id = o.parent_id
WHERE o.public_id = {{param}}
"""
CHILDREN_SQL = f"""
SELECT {COLUMNS}
FROM orgs AS o JOIN orgs AS p ON p.id = o.parent_id
WHERE o.parent_id = {{parent}} AND o.deleted_at IS NULL AND o.id > {{after}}
ORDER BY o.id
LIMIT {{limit}}
"""
KEYS_SQL = """
SELECT c.key_hash, c.scopes, o.path
FROM credentials AS c JOIN orgs AS o ON o.id = c.org_id
WHERE c.revoked_at IS NULL AND o.deleted_at IS NULL AND o.status NOT IN ('deactivated', 'deleted')
"""


def _sqlite_time(value: str | None) -> str | None:
    """SQLAlchemy's SQLite text ("2026-11-22 10:00:00.123456") as msgspec writes UTC times."""
    if value is None:
        return None
    text = value.replace(" ", "T", 1)
    return (text[:-7] if text.endswith(".000000") else text) + "Z"


class SqliteStore:
    """One sqlite3 connection, used from the event loop's thread (a query takes microseconds)."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=10000")
        self.conn.row_factory = sqlite3.Row
        self.org_sql = ORG_SQL.format(param="?")
        self.children_sql = CHILDREN_SQL.format(parent="?", after="?", limit="?")

    async def keys(self) -> list[tuple[str, Any, str]]:
        rows = self.conn.execute(KEYS_SQL).fetchall()
        return [(r["key_hash"], orjson.loads(r["scopes"]), r["path"]) for r in rows]

    def _org(self, row: sqlite3.Row) -> dict[str, Any]:
        org = dict(row)
        for column in JSON_COLUMNS:
            org[column] = orjson.loads(org[column])
        for column in TIME_COLUMNS:
            org[column] = _sqlite_time(org[column])
        return org

    async def org(self, public_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(self.org_sql, (public_id,)).fetchone()
        return None if row is None else self._org(row)

    async def children(self, parent_id: int, after: int, limit: int) -> list[dict[str, Any]]:
        rows = self.conn.execute(self.children_sql, (parent_id, after, limit)).fetchall()
        return [self._org(r) for r in rows]

    async def close(self) -> None:
        self.conn.close()


class PostgresStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: Any = None
        self.org_sql = ORG_SQL.format(param="$1")
        self.children_sql = CHILDREN_SQL.format(parent="$1", after="$2", limit="$3")

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

    async def keys(self) -> list[tuple[str, Any, str]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(KEYS_SQL)
        return [(r["key_hash"], r["scopes"], r["path"]) for r in rows]

    async def org(self, public_id: str) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(self.org_sql, public_id)
        return dict(row) if row is not None else None

    async def children(self, parent_id: int, after: int, limit: int) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(self.children_sql, parent_id, after, limit)
        return [dict(r) for r in rows]

    async def close(self) -> None:
        await self.pool.close()


def _store() -> SqliteStore | PostgresStore:
    target = os.environ.get("BARE_DATABASE", "orgplane.db")
    if target.startswith(("postgresql://", "postgres://")):
        return PostgresStore(target)
    return SqliteStore(target)


store = _store()
# sha256 of a key -> (the path of its org, whether it may read orgs)
key_reach: dict[str, tuple[str, bool]] = {}


def org_json(org: dict[str, Any]) -> dict[str, Any]:
    """orgplane's ``Org`` fields, in its order."""
    key = org["id"]
    return {
        "id": org["public_id"],
        "uuid": org["uuid"],
        "key": key,
        "sumo_id": f"{org['deployment']}-{key:016X}",
        "parent_id": org["parent_public_id"],
        "name": org["name"],
        "description": org["description"],
        "status": "deleted" if org["deleted_at"] is not None else org["status"],
        "deployment": org["deployment"],
        "country": org["country"],
        "timezone": org["timezone"],
        "plan": org["plan"],
        "depth": org["depth"],
        "tags": org["tags"],
        "settings": org["settings"],
        "customizations": org["customizations"],
        "created_at": org["created_at"],
        "modified_at": org["modified_at"],
        "deleted_at": org["deleted_at"],
        "version": org["version"],
    }


def _bearer(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, secret = value.decode("latin-1").partition(" ")
            return secret.strip() if scheme.lower() == "bearer" else None
    return None


def _cursor(value: str | None) -> int | None:
    if not value:
        return 0
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except ValueError:
        return None
    if isinstance(decoded, list) and len(decoded) == 1 and type(decoded[0]) is int:
        return int(decoded[0])
    return None


def _next_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([last_id])).decode().rstrip("=")


async def _send(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if isinstance(store, PostgresStore):
                await store.open()
            for key_hash, scopes, path in await store.keys():
                key_reach[key_hash] = (path, bool(READ_SCOPES.intersection(scopes)))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await store.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _org(scope: dict[str, Any], public_id: str) -> tuple[int, bytes | dict[str, Any]]:
    """The org if the key may read it: (200, row), else (status, body)."""
    secret = _bearer(scope)
    reach = key_reach.get(hashlib.sha256(secret.encode()).hexdigest()) if secret else None
    if reach is None:
        return 401, UNAUTHORIZED
    org = await store.org(public_id)
    if org is None or org["deleted_at"] is not None or not org["path"].startswith(reach[0]):
        return 404, NOT_FOUND
    if not reach[1]:
        return 403, FORBIDDEN
    return 200, org


async def _children(scope: dict[str, Any], public_id: str) -> tuple[int, bytes]:
    query = parse_qs(scope["query_string"].decode("latin-1"))
    try:
        limit = int(query.get("limit", ["100"])[0])
    except ValueError:
        return 400, BAD_REQUEST
    after = _cursor(query.get("cursor", [""])[0])
    if after is None or not 1 <= limit <= MAX_LIMIT:
        return 400, BAD_REQUEST
    status, parent = await _org(scope, public_id)
    if not isinstance(parent, dict):
        return status, parent
    rows = await store.children(parent["id"], after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    page = {
        "data": [org_json(r) for r in rows],
        "next_cursor": _next_cursor(rows[-1]["id"]) if more else None,
    }
    return 200, orjson.dumps(page, option=orjson.OPT_UTC_Z)


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
    public_id, _, rest = path[len("/orgs/") :].partition("/")
    if rest == "children":
        await _send(send, *await _children(scope, public_id))
        return
    if rest:
        await _send(send, 404, NOT_FOUND)
        return
    status, org = await _org(scope, public_id)
    body = org if isinstance(org, bytes) else orjson.dumps(org_json(org), option=orjson.OPT_UTC_Z)
    await _send(send, status, body)
