"""Reading the audit and access logs: filters, keyset pages (newest first), and full exports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from orgplane.core.access.principal import Principal
from orgplane.core.access.service import reach
from orgplane.core.errors import InvalidInput
from orgplane.core.pagination import decode_cursor, encode_cursor, newest_first_batches
from orgplane.db.engine import Reader
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
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput.for_field("query.since", "must be before query.until")
        return self


def _filtered(statement: Any, table: Any, filters: LogFilters) -> Any:
    if filters.since:
        statement = statement.where(table.c.at >= filters.since)
    if filters.until:
        statement = statement.where(table.c.at < filters.until)
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
    return _filtered(statement, audit_log, filters), audit_log


# --- the descendants' audit log --------------------------------------------------------------
#
# Entries of every org below ``org``, newest first. Within one tenant (and a subtree is within
# one) ``seq`` follows the order of ``id``: appends are serialized on the tenant's chain head.
# So the subtree's log is read in ``seq`` order, on the tenant's ``(root_id, seq)`` index, in two
# parts whose costs are bounded differently:
#
# * the tenant's newest RECENT_WALK entries, walked newest first through that index, each one's
#   org looked up to test the path: cheap per entry, and it stops at the page's last match, so a
#   subtree holding a fair share of the tenant's activity is answered there;
# * what is older, only when that walk did not fill the page: from the subtree's orgs (a range of
#   the path index) through each org's own entries, then sorted: a cost in proportion to the
#   subtree's entries (in the time window, when one is given).
#
# Either way alone is seconds at 10 million entries for some subtree: walking the whole tenant
# for a small subtree, or sorting every entry of a large one.

RECENT_WALK = 20_000
_SUBTREE_COLUMNS = (*audit_log.c, orgs.c.public_id.label("org_public_id"))


def _recent(org: Any, filters: LogFilters, low: int, high: int) -> Any:
    """The subtree's entries among the tenant's with ``low < seq <= high``, newest first. The path
    is tested on each entry's org (not an index range), so the walk drives the query."""
    statement = (
        sa.select(*_SUBTREE_COLUMNS)
        .select_from(audit_log.join(orgs, orgs.c.id == audit_log.c.org_id))
        .where(
            audit_log.c.root_id == org.root_id,
            audit_log.c.seq > low,
            audit_log.c.seq <= high,
            sa.func.substr(orgs.c.path, 1, len(org.path)) == org.path,
            orgs.c.path != org.path,
        )
    )
    return _filtered(statement, audit_log, filters).order_by(audit_log.c.seq.desc())


def _older(org: Any, filters: LogFilters, high: int) -> Any:
    """The subtree's entries with ``seq <= high``, newest first (``id`` order is ``seq`` order
    here; ordered by ``id``, PostgreSQL may also walk the primary key when it expects the
    subtree's entries to be dense, rather than sort the whole table)."""
    statement = (
        sa.select(*_SUBTREE_COLUMNS)
        .select_from(orgs.join(audit_log, audit_log.c.org_id == orgs.c.id))
        .where(
            orgs.c.path > org.path,
            orgs.c.path < org.path + _PATH_END,
            audit_log.c.seq <= high,
        )
    )
    return _filtered(statement, audit_log, filters).order_by(audit_log.c.id.desc())


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
    low = max(0, high - RECENT_WALK)
    rows = list((await conn.execute(_recent(org, filters, low, high).limit(count))).all())
    if len(rows) < count and low > 0:
        older = _older(org, filters, low).limit(count - len(rows))
        rows += (await conn.execute(older)).all()
    return rows


async def target(conn: Reader, principal: Principal, org_ref: str, log: Log = "audit") -> Any:
    # Logs of a deleted org stay readable for as long as the org can be restored.
    capability = "viewAccessLog" if log == "access" else "viewAuditLog"
    return await reach(
        conn, principal, org_ref, scope="audit:read", capability=capability, include_deleted=True
    )


async def page(
    conn: Reader,
    org: Any,
    log: Log,
    filters: LogFilters,
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    filters.check()
    if log == "children_audit":
        # (seq, id): a cursor of an org's own log (one id) is refused, not misread.
        after = decode_cursor(cursor, int, int)
        rows = await _subtree_rows(conn, org, filters, limit + 1, after[0] if after else None)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].seq, rows[-1].id) if more else None
    statement, table = _base(log, org, filters)
    before = decode_cursor(cursor, int)
    if before is not None:
        statement = statement.where(table.c.id < before[0])
    rows = list((await conn.execute(statement.order_by(table.c.id.desc()).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id) if more else None


async def stream(conn: Reader, org: Any, log: Log, filters: LogFilters) -> AsyncIterator[list[Any]]:
    """The whole filtered range, newest first, in batches (for NDJSON and CSV exports)."""
    filters.check()
    if log == "children_audit":
        below: int | None = None
        while True:
            batch = await _subtree_rows(conn, org, filters, EXPORT_BATCH, below)
            if batch:
                yield batch
            if len(batch) < EXPORT_BATCH:
                return
            below = batch[-1].seq
    statement, table = _base(log, org, filters)
    async for rows in newest_first_batches(conn, statement, table.c.id, size=EXPORT_BATCH):
        yield rows
