"""Reading the audit and access logs: filters, keyset pages (newest first), and full exports."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from orgplane.core.access.principal import Principal, path_reaches
from orgplane.core.access.service import hidden_from, org_not_found, reach
from orgplane.core.errors import InvalidInput
from orgplane.core.pagination import (
    decode_cursor,
    encode_cursor,
    newest_first_batches,
    time_window,
)
from orgplane.db.engine import Reader, reads_postgres
from orgplane.models import access_log, audit_log, orgs

Log = Literal["audit", "children_audit", "access"]
_PATH_END = "~"
EXPORT_BATCH = 1000


@dataclass(frozen=True)
class LogFilters:
    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    action: str | None = None
    status: str | None = None

    def check(self) -> LogFilters:
        since, until = time_window(self.since, self.until)
        return dataclasses.replace(self, since=since, until=until)


class _NotForIndexChoice(sa.sql.expression.ColumnElement[Any]):
    """A column SQLite must not pick an index by (rendered ``+column``, the same value there;
    unchanged elsewhere). Without statistics SQLite prefers the window's range on
    ``(org_id, at, ...)`` to the equalities of ``(org_id, actor, id, at)``, and then sorts every
    match of the window for one page."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: Any) -> None:
        self.column = column
        self.type = column.type


@compiles(_NotForIndexChoice)
def _as_is(element: _NotForIndexChoice, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column, **kw))


@compiles(_NotForIndexChoice, "sqlite")
def _unary_plus(element: _NotForIndexChoice, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.column, **kw))


def _filtered(statement: Any, table: Any, filters: LogFilters, *, at: Any = None) -> Any:
    at = table.c.at if at is None else at
    if filters.since:
        statement = statement.where(at >= filters.since)
    if filters.until:
        statement = statement.where(at < filters.until)
    if filters.actor:
        statement = statement.where(table.c.actor == filters.actor)
    if filters.action:
        if filters.action.endswith("*"):
            prefix = (
                filters.action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            )
            statement = statement.where(table.c.action.like(prefix + "%", escape="\\"))
        else:
            statement = statement.where(table.c.action == filters.action)
    return statement


def _base(log: Literal["audit", "access"], org: Any, filters: LogFilters) -> tuple[Any, Any]:
    """The statement for one org's own log with the filters applied, and its table."""
    if log == "access":
        statement = sa.select(access_log).where(access_log.c.org_id == org.id)
        if filters.status:
            statement = statement.where(access_log.c.status == filters.status.upper())
        return _filtered(statement, access_log, filters), access_log
    statement = sa.select(audit_log).where(audit_log.c.org_id == org.id)
    if filters.actor:
        # One actor's entries newest first on (org_id, actor, id, at), the window tested in the
        # index: the page stops at its last match, wherever the window is.
        at = _NotForIndexChoice(audit_log.c.at)
        return _filtered(statement, audit_log, filters, at=at), audit_log
    return _filtered(statement, audit_log, filters), audit_log


# --- the descendants' audit log --------------------------------------------------------------
#
# Entries of every org below ``org``, newest first. Within one tenant (and a subtree is within
# one) ``seq`` follows the order of ``id``: appends are serialized on the tenant's chain head,
# and an entry gets its id when it is inserted, under that lock. So the subtree's log is read in
# ``seq`` order, in consecutive ranges of the tenant's chain, each answered the cheaper way:
#
# * a walk of the tenant's newest entries on ``(root_id, seq, org_id, at, action, actor)``: the
#   filters are tested in the index and only a matching entry's org is tested, against the
#   subtree's org ids hashed once (a small subtree) or by looking up its path (a large one); it
#   stops at the page's last match. Cheap per entry (no table row read), so it answers subtrees
#   that hold a fair share of the tenant's activity;
# * the subtree's orgs (a range of the path index), each org's entries in the time window
#   (``(org_id, at, actor, action)``), sorted: a cost in proportion to the subtree's orgs and
#   matching entries, for small subtrees, or once the walk has gone far.
#
# Both read only what their index holds, and a page's rows are read by key at the end. Either
# way alone is seconds at 10 million entries for some subtree: walking the whole tenant for a
# small subtree, or sorting every entry of a large one.

RECENT_WALK = 20_000  # first walk, for every subtree
FAR_WALK = 100_000  # a second walk, for large subtrees whose first walk found matches
SMALL_SUBTREE = 5_000  # read by its orgs rather than by a second walk
HASHED_SUBTREE = 20_000  # the walks test an entry's org against the subtree's ids, hashed once
_SUBTREE_COLUMNS = (*audit_log.c, orgs.c.public_id.label("org_public_id"))


def _walk(org: Any, filters: LogFilters, low: int, high: int, count: int, *, hashed: bool) -> Any:
    """The subtree's entries among the tenant's with ``low < seq <= high``, newest first: their
    ``seq``. The walk drives; a matching entry's org is tested against the subtree's org ids
    (read once from the path index and hashed) or by looking up its path (a large subtree)."""
    statement = sa.select(audit_log.c.seq).where(
        audit_log.c.root_id == org.root_id,
        audit_log.c.seq > low,
        audit_log.c.seq <= high,
    )
    if hashed:
        below = sa.select(orgs.c.id).where(
            orgs.c.path > org.path, orgs.c.path < org.path + _PATH_END
        )
        # IS TRUE keeps the IN a filter of the walk (PostgreSQL: a hashed subplan) instead of a
        # join that the planner would drive from the orgs, then sort.
        statement = statement.where(audit_log.c.org_id.in_(below).is_(sa.true()))
    else:
        statement = statement.join(orgs, orgs.c.id == audit_log.c.org_id).where(
            sa.func.substr(orgs.c.path, 1, len(org.path)) == org.path,
            orgs.c.path != org.path,
        )
    return _filtered(statement, audit_log, filters).order_by(audit_log.c.seq.desc()).limit(count)


def _by_orgs(org: Any, filters: LogFilters, high: int, count: int) -> Any:
    """The subtree's entries with ``seq <= high`` (its ids up to the one of ``seq == high``),
    newest first: their ``id``, read through the subtree's orgs."""
    last_id = (
        sa.select(audit_log.c.id)
        .where(audit_log.c.root_id == org.root_id, audit_log.c.seq <= high)
        .order_by(audit_log.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    statement = (
        sa.select(audit_log.c.id)
        .select_from(orgs.join(audit_log, audit_log.c.org_id == orgs.c.id))
        .where(
            orgs.c.path > org.path,
            orgs.c.path < org.path + _PATH_END,
            audit_log.c.id <= last_id,
        )
    )
    return _filtered(statement, audit_log, filters).order_by(audit_log.c.id.desc()).limit(count)


def _entries(org: Any, picked: Any) -> Any:
    """The picked entries' rows (by ``seq`` in the tenant, or by ``id``), newest first."""
    picked = picked.subquery()
    if "seq" in picked.c:
        on = sa.and_(audit_log.c.root_id == org.root_id, audit_log.c.seq == picked.c.seq)
    else:
        on = audit_log.c.id == picked.c.id
    return (
        sa.select(*_SUBTREE_COLUMNS)
        .select_from(
            picked.join(audit_log, on).join(orgs, orgs.c.id == audit_log.c.org_id),
        )
        .order_by(audit_log.c.seq.desc())
    )


async def _subtree_rows(
    conn: Reader, org: Any, filters: LogFilters, count: int, below_seq: int | None
) -> list[Any]:
    """Up to ``count`` entries of the subtree, newest first, older than ``below_seq``."""
    if below_seq is None:
        newest = sa.select(sa.func.max(audit_log.c.seq)).where(audit_log.c.root_id == org.root_id)
        high = (await conn.execute(newest)).scalar()
        if high is None:
            return []
    else:
        high = below_seq - 1

    # PostgreSQL looks up each matching entry's org at ~2.5 us, more than hashing the ids of a
    # subtree of up to HASHED_SUBTREE orgs costs. SQLite's lookup by rowid is about as cheap as
    # probing the list it builds for each walk (subtrees of 12k-17k orgs measured 22 -> 35 ms
    # hashed): it keeps the lookup, and counts the subtree's orgs only if a far walk may follow.
    size: int | None = None
    if reads_postgres(conn):
        size = await _subtree_size(conn, org, max(SMALL_SUBTREE, HASHED_SUBTREE))
    hashed = size is not None and size <= HASHED_SUBTREE

    async def walk(low: int, high: int, count: int) -> list[Any]:
        picked = _walk(org, filters, low, high, count, hashed=hashed)
        return list((await conn.execute(_entries(org, picked))).all())

    low = max(0, high - RECENT_WALK)
    rows = await walk(low, high, count)
    if len(rows) == count or low == 0:
        return rows
    # Walk on only if this walk's matches promise the page within FAR_WALK more entries, and the
    # subtree is too large for reading its orgs to be cheap.
    promising = len(rows) * FAR_WALK >= (count - len(rows)) * RECENT_WALK
    if promising and size is None:
        size = await _subtree_size(conn, org, SMALL_SUBTREE)
    if promising and size is not None and size > SMALL_SUBTREE:
        high, low = low, max(0, low - FAR_WALK)
        rows += await walk(low, high, count - len(rows))
        if len(rows) == count or low == 0:
            return rows
    older = _entries(org, _by_orgs(org, filters, low, count - len(rows)))
    return rows + list((await conn.execute(older)).all())


async def _subtree_size(conn: Reader, org: Any, most: int) -> int:
    """How many orgs the subtree has, counting no further than ``most + 1`` (index only)."""
    below = (
        sa.select(orgs.c.id)
        .where(orgs.c.path > org.path, orgs.c.path < org.path + _PATH_END)
        .limit(most + 1)
        .subquery()
    )
    return int((await conn.execute(sa.select(sa.func.count()).select_from(below))).scalar() or 0)


async def target(conn: Reader, principal: Principal, org_ref: str, log: Log = "audit") -> Any:
    # Logs of a deleted org stay readable for as long as the org can be restored.
    capability = "viewAccessLog" if log == "access" else "viewAuditLog"
    return await reach(
        conn, principal, org_ref, scope="audit:read", capability=capability, include_deleted=True
    )


async def page(
    conn: Reader,
    principal: Principal,
    org: Any,
    log: Log,
    filters: LogFilters,
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """A page of the log as ``principal`` may see it (``as_seen_by``)."""
    filters = filters.check()
    if log == "children_audit":
        # (seq, id): a cursor of an org's own log (one id) is refused, not misread.
        after = decode_cursor(cursor, int, int)
        rows = await _subtree_rows(conn, org, filters, limit + 1, after[0] if after else None)
        more = len(rows) > limit
        rows = await as_seen_by(conn, principal, rows[:limit])
        return rows, encode_cursor(rows[-1].seq, rows[-1].id) if more else None
    statement, table = _base(log, org, filters)
    before = decode_cursor(cursor, int)
    if before is not None:
        statement = statement.where(table.c.id < before[0])
    rows = list((await conn.execute(statement.order_by(table.c.id.desc()).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit] if log == "access" else await as_seen_by(conn, principal, rows[:limit])
    return rows, encode_cursor(rows[-1].id) if more else None


async def stream(
    conn: Reader, principal: Principal, org: Any, log: Log, filters: LogFilters
) -> AsyncIterator[list[Any]]:
    """The whole filtered range, newest first, in batches (for NDJSON and CSV exports), as
    ``principal`` may see it."""
    filters = filters.check()
    if log == "children_audit":
        below: int | None = None
        while True:
            batch = await _subtree_rows(conn, org, filters, EXPORT_BATCH, below)
            if batch:
                yield await as_seen_by(conn, principal, batch)
            if len(batch) < EXPORT_BATCH:
                return
            below = batch[-1].seq
    statement, table = _base(log, org, filters)
    async for rows in newest_first_batches(conn, statement, table.c.id, size=EXPORT_BATCH):
        yield rows if log == "access" else await as_seen_by(conn, principal, rows)


# Keys of an audit entry's before/after documents that name an org by its public id.
ORG_REFERENCES = ("parent", "parent_id", "returned_to", "cascade_of")


async def as_seen_by(conn: Reader, principal: Principal, rows: list[Any]) -> list[Any]:
    """The entries with every org they name outside the principal's reach shown as null (a
    key of a child reads its own allocations without learning its parent's id)."""
    return await _as_seen(conn, principal.reaches, rows)


async def as_seen_from_org(conn: Reader, org_id: int, rows: list[Any]) -> list[Any]:
    """The entries as the org ``org_id`` sees them (``as_seen_by`` for a key of that org): what
    a webhook of the org receives."""
    return await _as_seen(conn, lambda path: path_reaches(org_id, path), rows)


async def _as_seen(conn: Reader, reaches: Callable[[str], bool], rows: list[Any]) -> list[Any]:
    named = {
        value
        for row in rows
        for document in (row.before, row.after)
        if isinstance(document, dict)
        for key in ORG_REFERENCES
        if isinstance(value := document.get(key), str)
    }
    hidden = await hidden_from(conn, reaches, named)
    if not hidden:
        return rows
    return [_hiding(row, hidden) for row in rows]


def _hiding(row: Any, hidden: set[str]) -> Any:
    def scrub(document: Any) -> Any:
        if not isinstance(document, dict):
            return document
        return {k: None if k in ORG_REFERENCES and v in hidden else v for k, v in document.items()}

    return SimpleNamespace(
        **{**row._asdict(), "before": scrub(row.before), "after": scrub(row.after)}
    )


OPERATOR_MAX_LIMIT = 10_000


async def installation_access_log(
    conn: Reader, filters: LogFilters, *, org_ref: str | None = None, limit: int = 100
) -> list[Any]:
    """The operator's view of the access log across the installation, newest first: every
    attempt, including those with an unknown key, which belong to no org (``org_id`` NULL and
    so out of every API caller's view). ``org_ref`` keeps one org's entries (a deleted org's
    too); ``org_public_id`` is None for entries of no org."""
    if not 1 <= limit <= OPERATOR_MAX_LIMIT:
        raise InvalidInput.for_field("limit", f"must be between 1 and {OPERATOR_MAX_LIMIT}")
    filters.check()
    statement = sa.select(
        access_log.c.id,
        access_log.c.at,
        access_log.c.status,
        access_log.c.action,
        access_log.c.actor,
        access_log.c.key_id,
        orgs.c.public_id.label("org_public_id"),
        access_log.c.method,
        access_log.c.path,
        access_log.c.ip,
        access_log.c.user_agent,
        access_log.c.detail,
    ).select_from(access_log.outerjoin(orgs, orgs.c.id == access_log.c.org_id))
    if org_ref is not None:
        org_id = (
            await conn.execute(sa.select(orgs.c.id).where(orgs.c.public_id == org_ref))
        ).scalar()
        if org_id is None:
            raise org_not_found(org_ref)
        statement = statement.where(access_log.c.org_id == org_id)
    statement = _filtered(statement, access_log, filters)
    if filters.status is not None:
        statement = statement.where(access_log.c.status == filters.status)
    statement = statement.order_by(access_log.c.id.desc()).limit(limit)
    return list((await conn.execute(statement)).all())
