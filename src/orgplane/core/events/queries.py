"""Reading the event log forward: the events of an org's subtree after a position, in commit
order, a bounded stretch of the tenant's log at a time.

A position is a ``seq`` of the tenant's chain (``audit_log``). Entries are numbered 1, 2, 3...
without gaps, and a tenant's appends commit in ``seq`` order (each holds the chain head's lock
until it commits), so every entry up to the head read first is committed and visible to the
reads that follow. A page reads the tenant's entries after the position, at most ``SCAN``
of them, on the ``(root_id, seq, org_id, at, action, actor)`` index (the type filter tested
there), keeps those of the subtree, and answers the first ``limit`` of them with a cursor at the
last one, or, when fewer matched, at the last entry it scanned: a small subtree in a busy tenant
costs each poll ``SCAN`` index entries, never the whole log, and the consumer's position still
advances. Without a position a consumer starts at the oldest entry (the start of the log);
``after=now`` starts at the head, for a consumer that only wants what happens next.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orgplane.core import events
from orgplane.core.access.principal import Principal
from orgplane.core.access.service import reach
from orgplane.core.audit.queries import as_seen_by
from orgplane.core.errors import InvalidInput
from orgplane.core.pagination import decode_cursor, encode_cursor
from orgplane.db.engine import Reader
from orgplane.models import audit_chain_heads, audit_log, orgs

# The most entries of the tenant's log one page reads.
SCAN = 5_000
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_PATTERNS = 20
NOW = "now"
_PATH_END = "~"


@dataclass(frozen=True)
class Page:
    """Events (audit entries as the principal may see them, with ``org_public_id``) and the
    cursor to read on from."""

    rows: list[Any]
    next_cursor: str
    position: int


def parse_types(values: Iterable[str] | None, field: str = "query.type") -> tuple[str, ...]:
    """Type patterns from ``?type=`` (repeated, or comma-separated); () for every type."""
    patterns: list[str] = []
    for value in values or ():
        patterns += [p.strip() for p in value.split(",") if p.strip()]
    if len(patterns) > MAX_PATTERNS:
        raise InvalidInput.for_field(field, f"at most {MAX_PATTERNS} patterns")
    for pattern in patterns:
        if not events.TYPE_PATTERN.match(pattern):
            raise InvalidInput.for_field(
                field,
                f"{pattern[:80]!r} is not an event type or pattern: 1-64 characters of a-z, "
                "0-9, '_', '.' and '*' (any run of characters), e.g. org.* or *.deleted",
            )
    return () if "*" in patterns else tuple(dict.fromkeys(patterns))


def check_limit(limit: int, field: str = "query.limit") -> int:
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput.for_field(field, f"must be between 1 and {MAX_LIMIT}")
    return limit


def position_of(cursor: str | None, field: str = "query.after") -> int | None:
    """The ``seq`` a cursor names; None for ``now`` (the head); 0 without one (the start)."""
    if cursor is None or cursor == "":
        return 0
    if cursor == NOW:
        return None
    try:
        found = decode_cursor(cursor, int)
    except InvalidInput:
        found = None
    if found is None or found[0] < 0 or found[0] >= 2**63:
        raise InvalidInput.for_field(
            field, "not a cursor returned by this API (a next_cursor or an event's id: line)"
        )
    return int(found[0])


def cursor_at(seq: int) -> str:
    return encode_cursor(seq)


async def target(conn: Reader, principal: Principal, org_ref: str) -> Any:
    """The org whose events ``principal`` reads (404 out of reach; 403 without audit:read).
    A deleted org's events stay readable, as its audit trail does."""
    return await reach(
        conn,
        principal,
        org_ref,
        scope="audit:read",
        capability="viewAuditLog",
        include_deleted=True,
    )


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _type_filter(patterns: Sequence[str]) -> Any:
    exact = [p for p in patterns if "*" not in p]
    clauses: list[Any] = []
    if exact:
        clauses.append(audit_log.c.action.in_(exact))
    clauses += [audit_log.c.action.like(_like(p), escape="\\") for p in patterns if "*" in p]
    return sa.or_(*clauses)


async def head(conn: Reader, root_id: int) -> int:
    """The tenant's last committed position."""
    found = await conn.execute(
        sa.select(audit_chain_heads.c.seq).where(audit_chain_heads.c.root_id == root_id)
    )
    return int(found.scalar() or 0)


async def page(
    conn: Reader,
    principal: Principal,
    org: Any,
    *,
    after: int | None,
    limit: int,
    types: Sequence[str] = (),
) -> Page:
    """The subtree's events after position ``after`` (None: the head), oldest first."""
    last = await head(conn, org.root_id)
    start = last if after is None else after
    high = min(last, start + SCAN)
    if high <= start:
        return Page([], cursor_at(start), start)
    whole_tenant = org.id == org.root_id
    picked = sa.select(audit_log.c.seq, audit_log.c.org_id).where(
        audit_log.c.root_id == org.root_id,
        audit_log.c.seq > start,
        audit_log.c.seq <= high,
    )
    if types:
        picked = picked.where(_type_filter(types))
    picked = picked.order_by(audit_log.c.seq)
    if whole_tenant:
        picked = picked.limit(limit)
    found = list((await conn.execute(picked)).all())
    if not whole_tenant and found:
        inside = await _subtree_members(conn, org, {row.org_id for row in found})
        found = [row for row in found if row.org_id in inside][:limit]
    # The index's LIKE agrees with ``events.matches`` on these patterns; it is the contract.
    seqs = [row.seq for row in found]
    rows = await _entries(conn, org.root_id, seqs) if seqs else []
    if types:
        rows = [row for row in rows if events.matches(types, row.action)]
    rows = await as_seen_by(conn, principal, rows)
    position = seqs[-1] if len(seqs) == limit else high
    return Page(rows, cursor_at(position), position)


async def _subtree_members(conn: Reader, org: Any, org_ids: set[int]) -> set[int]:
    """Of these orgs, those in ``org``'s subtree (itself included), by their current path."""
    rows = await conn.execute(
        sa.select(orgs.c.id).where(
            orgs.c.id.in_(sorted(org_ids)),
            orgs.c.path >= org.path,
            orgs.c.path < org.path + _PATH_END,
        )
    )
    return {row.id for row in rows}


async def _entries(conn: Reader, root_id: int, seqs: list[int]) -> list[Any]:
    statement = (
        sa.select(*audit_log.c, orgs.c.public_id.label("org_public_id"))
        .select_from(audit_log.join(orgs, orgs.c.id == audit_log.c.org_id))
        .where(audit_log.c.root_id == root_id, audit_log.c.seq.in_(seqs))
        .order_by(audit_log.c.seq)
    )
    return list((await conn.execute(statement)).all())


def payloads(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """The events of a page, in the shared payload shape (``core.events.payload``)."""
    return [events.payload(row, row.org_public_id) for row in rows]
