"""The audit log: entries buffered during a transaction and chained just before it commits.

Each tenant tree's entries form a hash chain (``hash = sha256(prev_hash + canonical entry)``),
so an edited, removed or reordered row breaks the chain and ``verify`` names the first bad link.
The canonical entry holds ``HASHED_FIELDS``, and ``surface`` when it is set (entries written
before it existed have none, and their hashes stay as they were).
Appending takes the tenant's chain head last in the transaction, which keeps the lock short and
the lock order fixed (org rows first, then the head), so appends cannot deadlock with moves. (An
allocation on PostgreSQL chains its one entry itself, ``make_entry`` then ``link``: it takes the
head in the statement that locks its limit rows, after them, and only writes follow.)
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from orgplane.core.access.principal import Actor
from orgplane.db.engine import Reader, Tx
from orgplane.models import audit_chain_heads, audit_log
from orgplane.models.base import utcnow

GENESIS = "0" * 64
HASHED_FIELDS = (
    "root_id",
    "seq",
    "org_id",
    "at",
    "actor",
    "actor_key_id",
    "actor_user_id",
    "action",
    "target_type",
    "target_id",
    "before",
    "after",
    "request_id",
    "ip",
    "user_agent",
)
# Hashed when set: an entry written before the column existed has none.
HASHED_WHEN_SET = ("surface",)
# Every column an entry writes, in one order: what the hash covers, then the links.
COLUMNS = (*HASHED_FIELDS, *HASHED_WHEN_SET, "prev_hash", "hash")


def record(
    tx: Tx,
    actor: Actor,
    *,
    action: str,
    root_id: int,
    org_id: int,
    target_type: str,
    target_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Queue an entry; it is written and chained when the transaction commits, or never."""
    tx.pending_audit.append(
        make_entry(
            actor,
            action=action,
            root_id=root_id,
            org_id=org_id,
            target_type=target_type,
            target_id=target_id,
            before=before,
            after=after,
        )
    )


def make_entry(
    actor: Actor,
    *,
    action: str,
    root_id: int,
    org_id: int,
    target_type: str,
    target_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An entry's columns, before it is chained (``link``) and written."""
    principal = actor.principal
    return {
        "root_id": root_id,
        "org_id": org_id,
        "at": utcnow(),
        "actor": actor.label,
        "actor_key_id": principal.key_id if principal else None,
        "actor_user_id": principal.user_id if principal else None,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "before": _jsonable(before),
        "after": _jsonable(after),
        "request_id": actor.meta.request_id,
        "ip": actor.meta.ip,
        "user_agent": (actor.meta.user_agent or "")[:400] or None,
        "surface": actor.meta.surface,
    }


def _jsonable(value: dict[str, Any] | None) -> Any:
    return None if value is None else orjson.loads(orjson.dumps(value))


def _timestamp(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def entry_hash(prev_hash: str, entry: Any) -> str:
    get = entry.get if isinstance(entry, dict) else lambda k: getattr(entry, k)
    document: dict[str, Any] = {name: get(name) for name in HASHED_FIELDS}
    document["at"] = _timestamp(document["at"])
    for name in HASHED_WHEN_SET:
        if (value := get(name)) is not None:
            document[name] = value
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical).hexdigest()


async def start_chain(tx: Tx, root_id: int) -> None:
    """Create the chain head of a new tenant tree (in the transaction that creates its root)."""
    await tx.execute(sa.insert(audit_chain_heads).values(root_id=root_id, seq=0, last_hash=GENESIS))


_HEAD_FOR_UPDATE = (
    sa.select(audit_chain_heads.c.seq, audit_chain_heads.c.last_hash)
    .where(audit_chain_heads.c.root_id == sa.bindparam("head_root_id"))
    .with_for_update()
)
_MOVE_HEAD = (
    sa.update(audit_chain_heads)
    .where(audit_chain_heads.c.root_id == sa.bindparam("head_root_id"))
    .values(seq=sa.bindparam("new_seq"), last_hash=sa.bindparam("new_hash"))
)
_INSERT_ENTRIES = sa.insert(audit_log)


async def append_pending(tx: Tx) -> None:
    """Chain and insert the transaction's queued entries (the Database's before-commit hook)."""
    if not tx.pending_audit:
        return
    by_root: dict[int, list[dict[str, Any]]] = {}
    for pending in tx.pending_audit:
        by_root.setdefault(pending["root_id"], []).append(pending)
    rows = []
    for root_id in sorted(by_root):
        head = (await tx.execute(_HEAD_FOR_UPDATE, {"head_root_id": root_id})).one()
        seq, last_hash = link(by_root[root_id], head.seq, head.last_hash)
        rows += by_root[root_id]
        await tx.execute(
            _MOVE_HEAD, {"head_root_id": root_id, "new_seq": seq, "new_hash": last_hash}
        )
    await tx.execute(_INSERT_ENTRIES, rows)
    tx.pending_audit.clear()


def link(entries: list[dict[str, Any]], seq: int, last_hash: str) -> tuple[int, str]:
    """Chain ``entries`` (of one tenant, in order) after its head (``seq``, ``last_hash``):
    set each one's ``seq``, ``prev_hash`` and ``hash``; return the new head."""
    for pending in entries:
        seq += 1
        pending["seq"] = seq
        pending["prev_hash"] = last_hash
        pending["hash"] = last_hash = entry_hash(last_hash, pending)
    return seq, last_hash


@dataclass(frozen=True)
class ChainBreak:
    root_id: int
    seq: int
    entry_id: int | None
    reason: str


async def verify(conn: Reader, root_id: int | None = None) -> list[ChainBreak]:
    """Recompute every tenant's chain; report the first broken link of each, if any."""
    heads_query = sa.select(audit_chain_heads)
    if root_id is not None:
        heads_query = heads_query.where(audit_chain_heads.c.root_id == root_id)
    heads = (await conn.execute(heads_query)).all()
    breaks: list[ChainBreak] = []
    for head in heads:
        found = await _verify_chain(conn, head)
        if found is not None:
            breaks.append(found)
    return breaks


async def _verify_chain(conn: Reader, head: Any) -> ChainBreak | None:
    prev, expected_seq = GENESIS, 1
    async for entry in _chain_entries(conn, head.root_id):
        if entry.seq != expected_seq:
            return ChainBreak(head.root_id, expected_seq, entry.id, "entry missing from the chain")
        if entry.prev_hash != prev:
            return ChainBreak(head.root_id, entry.seq, entry.id, "prev_hash does not match")
        if entry_hash(prev, entry) != entry.hash:
            return ChainBreak(head.root_id, entry.seq, entry.id, "entry was altered")
        prev, expected_seq = entry.hash, expected_seq + 1
    if expected_seq - 1 != head.seq or prev != head.last_hash:
        return ChainBreak(head.root_id, expected_seq, None, "chain ends before its head")
    return None


async def _chain_entries(conn: Reader, root_id: int) -> AsyncIterator[Any]:
    last_seq = 0
    while True:
        batch = (
            await conn.execute(
                sa.select(audit_log)
                .where(audit_log.c.root_id == root_id, audit_log.c.seq > last_seq)
                .order_by(audit_log.c.seq)
                .limit(1000)
            )
        ).all()
        if not batch:
            return
        for entry in batch:
            yield entry
        last_seq = batch[-1].seq
