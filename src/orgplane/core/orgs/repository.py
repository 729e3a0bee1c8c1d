"""The SQL of the organization tree: rows read, inserted, locked and rewritten.

The rules (reach, locks taken first, audit) are ``service``'s; listings are ``queries``'.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from orgplane.core.access.service import ORG_COLUMNS, PARENT
from orgplane.core.ids import new_public_id, new_uuid
from orgplane.db.engine import Reader, Tx
from orgplane.models import memberships, org_tags, orgs
from orgplane.models.base import utcnow

# Upper bound of a subtree's range: every path character ("/", digits) sorts below "~".
_PATH_END = "~"
_parent = PARENT


def subtree_range(path: str) -> sa.ColumnElement[bool]:
    """The org at ``path`` and all its descendants: one range scan on the unique path index."""
    return sa.and_(orgs.c.path >= path, orgs.c.path < path + _PATH_END)


def descendants_range(path: str) -> sa.ColumnElement[bool]:
    return sa.and_(orgs.c.path > path, orgs.c.path < path + _PATH_END)


async def fetch(conn: Reader, org_id: int) -> Any:
    statement = (
        sa.select(*ORG_COLUMNS)
        .select_from(orgs.outerjoin(_parent, _parent.c.id == orgs.c.parent_id))
        .where(orgs.c.id == org_id)
    )
    return (await conn.execute(statement)).one()


async def insert_org(tx: Tx, values: dict[str, Any], parent: Any | None) -> int:
    now = utcnow()
    row = {
        "uuid": new_uuid(),
        "public_id": new_public_id(),
        "parent_id": parent.id if parent is not None else None,
        "root_id": parent.root_id if parent is not None else 0,
        # A unique placeholder until the id is known.
        "path": f"new:{new_uuid()}",
        "depth": parent.depth + 1 if parent is not None else 0,
        "description": "",
        "status": "active",
        "deployment": parent.deployment if parent is not None else "us1",
        "timezone": parent.timezone if parent is not None else "UTC",
        "plan": "free",
        "settings": {},
        "tags": [],
        "customizations": {},
        "created_at": now,
        "modified_at": now,
        "version": 1,
        **values,
    }
    org_id: int = (await tx.execute(sa.insert(orgs).values(row).returning(orgs.c.id))).scalar_one()
    path = (parent.path if parent is not None else "/") + f"{org_id}/"
    fixes: dict[str, Any] = {"path": path}
    if parent is None:
        fixes["root_id"] = org_id
    await tx.execute(sa.update(orgs).where(orgs.c.id == org_id).values(fixes))
    if row["tags"]:
        await tx.execute(sa.insert(org_tags), [{"org_id": org_id, "tag": t} for t in row["tags"]])
    return org_id


async def write_fields(tx: Tx, org_id: int, changed: dict[str, Any]) -> None:
    """Write changed fields (and the tag index when the tags changed); a new version."""
    await tx.execute(
        sa.update(orgs)
        .where(orgs.c.id == org_id)
        .values(**changed, modified_at=utcnow(), version=orgs.c.version + 1)
    )
    if "tags" in changed:
        await tx.execute(sa.delete(org_tags).where(org_tags.c.org_id == org_id))
        if changed["tags"]:
            await tx.execute(
                sa.insert(org_tags), [{"org_id": org_id, "tag": t} for t in changed["tags"]]
            )


async def lock_subtree(tx: Tx, path: str) -> list[Any]:
    """The subtree's rows, locked (PostgreSQL) in id order."""
    statement = sa.select(
        orgs.c.id,
        orgs.c.public_id,
        orgs.c.path,
        orgs.c.depth,
        orgs.c.deleted_at,
        orgs.c.deleted_with,
        orgs.c.parent_id,
        orgs.c.root_id,
        orgs.c.timezone,
        orgs.c.deployment,
        orgs.c.status,
    ).where(subtree_range(path))
    if tx.is_postgres:
        statement = statement.order_by(orgs.c.id).with_for_update()
    return list((await tx.execute(statement)).all())


async def mark_deleted(tx: Tx, row: Any, *, with_descendants: bool) -> None:
    """Soft-delete ``row`` (and its live descendants, marked as deleted with it)."""
    now = utcnow()
    await tx.execute(
        sa.update(orgs)
        .where(orgs.c.id == row.id)
        .values(deleted_at=now, deleted_with=None, modified_at=now, version=orgs.c.version + 1)
    )
    if with_descendants:
        await tx.execute(
            sa.update(orgs)
            .where(descendants_range(row.path), orgs.c.deleted_at.is_(None))
            .values(
                deleted_at=now, deleted_with=row.id, modified_at=now, version=orgs.c.version + 1
            )
        )


async def mark_restored(tx: Tx, org_ids: list[int]) -> None:
    now = utcnow()
    await tx.execute(
        sa.update(orgs)
        .where(orgs.c.id.in_(org_ids))
        .values(deleted_at=None, deleted_with=None, modified_at=now, version=orgs.c.version + 1)
    )


async def reparent(tx: Tx, row: Any, new_parent: Any) -> None:
    """Put ``row`` under ``new_parent``: every path and depth of its subtree follows."""
    new_path = f"{new_parent.path}{row.id}/"
    delta = new_parent.depth + 1 - row.depth
    await tx.execute(
        sa.update(orgs)
        .where(subtree_range(row.path))
        .values(
            path=sa.literal(new_path) + sa.func.substr(orgs.c.path, len(row.path) + 1),
            depth=orgs.c.depth + delta,
        )
    )
    await tx.execute(
        sa.update(orgs)
        .where(orgs.c.id == row.id)
        .values(parent_id=new_parent.id, modified_at=utcnow(), version=orgs.c.version + 1)
    )


async def children_and_members(conn: Reader, org_id: int) -> tuple[int, int]:
    """How many live children and how many members the org has."""
    children = (
        await conn.execute(
            sa.select(sa.func.count())
            .select_from(orgs)
            .where(orgs.c.parent_id == org_id, orgs.c.deleted_at.is_(None))
        )
    ).scalar_one()
    members = (
        await conn.execute(
            sa.select(sa.func.count())
            .select_from(memberships)
            .where(memberships.c.org_id == org_id)
        )
    ).scalar_one()
    return int(children), int(members)
