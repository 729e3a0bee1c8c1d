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


def _base(log: Log, org: Any, filters: LogFilters) -> tuple[Any, Any]:
    """The statement for one log of ``org`` with the filters applied, and its table."""
    if log == "access":
        table = access_log
        statement = sa.select(access_log).where(access_log.c.org_id == org.id)
        if filters.status:
            statement = statement.where(access_log.c.status == filters.status.upper())
    elif log == "audit":
        table = audit_log
        statement = sa.select(audit_log).where(audit_log.c.org_id == org.id)
    else:
        table = audit_log
        statement = (
            sa.select(audit_log, orgs.c.public_id.label("org_public_id"))
            .select_from(audit_log.join(orgs, orgs.c.id == audit_log.c.org_id))
            .where(orgs.c.path > org.path, orgs.c.path < org.path + _PATH_END)
        )
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
    return statement, table


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
    statement, table = _base(log, org, filters.check())
    before = decode_cursor(cursor, int)
    if before is not None:
        statement = statement.where(table.c.id < before[0])
    rows = list((await conn.execute(statement.order_by(table.c.id.desc()).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id) if more else None


async def stream(conn: Reader, org: Any, log: Log, filters: LogFilters) -> AsyncIterator[list[Any]]:
    """The whole filtered range, newest first, in batches (for NDJSON and CSV exports)."""
    statement, table = _base(log, org, filters.check())
    async for batch in newest_first_batches(conn, statement, table.c.id, size=EXPORT_BATCH):
        yield batch
