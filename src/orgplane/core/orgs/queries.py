"""Listing organizations: children, descendants and a principal's subtree, keyset or offset
paginated, filtered by name, status and tag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orgplane.core.access.principal import Principal
from orgplane.core.access.service import PARENT, reach
from orgplane.core.errors import InvalidInput
from orgplane.core.orgs.repository import descendants_range, subtree_range
from orgplane.core.pagination import decode_cursor, encode_cursor
from orgplane.db.engine import PreparedSelect, Reader, all_rows
from orgplane.models import org_tags, orgs

_parent = PARENT


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    next_cursor: str | None


_LIST_COLUMNS = (*orgs.c, _parent.c.public_id.label("parent_public_id"))


def _children_page(*conditions: sa.ColumnElement[bool]) -> PreparedSelect:
    return PreparedSelect(
        sa.select(*_LIST_COLUMNS)
        .select_from(orgs.join(_parent, _parent.c.id == orgs.c.parent_id))
        .where(
            orgs.c.parent_id == sa.bindparam("parent_id"), orgs.c.deleted_at.is_(None), *conditions
        )
        .order_by(orgs.c.id)
        .limit(sa.bindparam("limit"))
    )


CHILDREN = _children_page()
CHILDREN_AFTER = _children_page(orgs.c.id > sa.bindparam("after"))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_children(
    conn: Reader,
    principal: Principal,
    org_ref: str,
    *,
    limit: int,
    cursor: str | None = None,
    name: str | None = None,
    status: str | None = None,
    tag: str | None = None,
) -> Page:
    parent = await reach(conn, principal, org_ref, scope="orgs:read")
    after = decode_cursor(cursor, int)
    if name is None and status is None and tag is None:
        # The common page, no filter: prepared, on the driver.
        prepared = CHILDREN if after is None else CHILDREN_AFTER
        params = {"parent_id": parent.id, "after": after[0] if after else 0, "limit": limit + 1}
        rows = await all_rows(conn, prepared, params)
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor(rows[-1].id) if more else None)
    statement = (
        sa.select(*_LIST_COLUMNS)
        .select_from(orgs.join(_parent, _parent.c.id == orgs.c.parent_id))
        .where(orgs.c.parent_id == parent.id)
    )
    statement = _filters(statement, name=name, status=status, tag=tag)
    if after is not None:
        statement = statement.where(orgs.c.id > after[0])
    rows = list((await conn.execute(statement.order_by(orgs.c.id).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more else None)


SUBTREE_SORTS = {
    "id": orgs.c.id,
    "name": sa.func.lower(orgs.c.name),
    "created_at": orgs.c.created_at,
}


async def list_subtree(
    conn: Reader,
    principal: Principal,
    *,
    sort: str,
    descending: bool,
    offset: int,
    limit: int,
) -> list[Any]:
    """The principal's org and its live descendants, sorted and paged by offset (for surfaces
    whose clients page that way)."""
    top = await reach(conn, principal, principal.org_public_id, scope="orgs:read")
    if sort not in SUBTREE_SORTS:
        raise InvalidInput.for_field("sort", f"must be one of {', '.join(SUBTREE_SORTS)}")
    key = SUBTREE_SORTS[sort]
    order = (key.desc(), orgs.c.id.desc()) if descending else (key, orgs.c.id)
    statement = (
        sa.select(*_LIST_COLUMNS)
        .select_from(orgs.outerjoin(_parent, _parent.c.id == orgs.c.parent_id))
        .where(subtree_range(top.path), orgs.c.deleted_at.is_(None))
        .order_by(*order)
        .offset(offset)
        .limit(limit)
    )
    return list((await conn.execute(statement)).all())


async def list_descendants(
    conn: Reader,
    principal: Principal,
    org_ref: str,
    *,
    limit: int,
    cursor: str | None = None,
    max_depth: int | None = None,
    name: str | None = None,
    status: str | None = None,
    tag: str | None = None,
) -> Page:
    """Descendants in depth-first order (parents before children), paginated on the path."""
    top = await reach(conn, principal, org_ref, scope="orgs:read")
    after = decode_cursor(cursor, str)
    statement = (
        sa.select(*_LIST_COLUMNS)
        .select_from(orgs.join(_parent, _parent.c.id == orgs.c.parent_id))
        .where(descendants_range(top.path))
    )
    statement = _filters(statement, name=name, status=status, tag=tag)
    if max_depth is not None:
        statement = statement.where(orgs.c.depth <= top.depth + max_depth)
    if after is not None:
        statement = statement.where(orgs.c.path > after[0])
    rows = list((await conn.execute(statement.order_by(orgs.c.path).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].path) if more else None)


def _filters(statement: Any, *, name: str | None, status: str | None, tag: str | None) -> Any:
    if status == "deleted":
        statement = statement.where(orgs.c.deleted_at.is_not(None))
    else:
        statement = statement.where(orgs.c.deleted_at.is_(None))
        if status is not None:
            statement = statement.where(orgs.c.status == status)
    if name:
        pattern = f"%{_escape_like(name.lower())}%"
        statement = statement.where(sa.func.lower(orgs.c.name).like(pattern, escape="\\"))
    if tag:
        statement = statement.where(
            sa.exists().where(org_tags.c.org_id == orgs.c.id, org_tags.c.tag == tag)
        )
    return statement


async def lineage(conn: Reader, principal: Principal, org: Any) -> list[Any]:
    """The orgs from the principal's own down to ``org`` (one it has reached), with their
    public ids and names: what a breadcrumb shows, and nothing above the principal."""
    ids = [int(i) for i in org.path.strip("/").split("/")]
    shown = ids[ids.index(principal.org_id) :] if principal.org_id in ids else [org.id]
    rows = await conn.execute(
        sa.select(orgs.c.id, orgs.c.public_id, orgs.c.name).where(orgs.c.id.in_(shown))
    )
    by_id = {row.id: row for row in rows}
    return [by_id[i] for i in shown if i in by_id]


async def get_any(conn: Reader, principal: Principal, org_ref: str) -> Any:
    """An org the principal reaches, deleted ones included (for reads that must show them)."""
    return await reach(conn, principal, org_ref, scope="orgs:read", include_deleted=True)


__all__ = [
    "Page",
    "get_any",
    "list_children",
    "list_descendants",
    "list_subtree",
]
