"""What the operator's CLI reads and sets with no principal: it acts as ``Actor.system(...)``
and names any org of the database by its public id, so there is no reach to check."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from orgplane.core.access.principal import Actor
from orgplane.core.access.service import org_not_found
from orgplane.core.credits.service import Balance, apply_root_limit
from orgplane.core.orgs.repository import subtree_range
from orgplane.db.engine import Reader, Tx
from orgplane.models import orgs


async def find_org(conn: Reader, org_ref: str, *, lock: bool = False) -> Any:
    """The live org ``org_ref``, or 404; ``lock`` takes a share lock (PostgreSQL) that keeps it
    live and in place until commit."""
    statement = sa.select(orgs).where(orgs.c.public_id == org_ref)
    if lock:
        statement = statement.with_for_update(read=True)
    row = (await conn.execute(statement)).first()
    if row is None or row.deleted_at is not None:
        raise org_not_found(org_ref)
    return row


async def org_tree(conn: Reader, *, root_ref: str | None, include_deleted: bool) -> list[Any]:
    """Every org (or those under ``root_ref``, deleted ones included there), in path order."""
    statement = sa.select(
        orgs.c.public_id,
        orgs.c.name,
        orgs.c.path,
        orgs.c.depth,
        orgs.c.status,
        orgs.c.deleted_at,
    ).order_by(orgs.c.path)
    if root_ref is not None:
        top = (
            await conn.execute(sa.select(orgs.c.path).where(orgs.c.public_id == root_ref))
        ).first()
        if top is None:
            raise org_not_found(root_ref)
        statement = statement.where(subtree_range(top.path))
    if not include_deleted:
        statement = statement.where(orgs.c.deleted_at.is_(None))
    return list((await conn.execute(statement)).all())


async def set_root_limit(tx: Tx, *, actor: Actor, org_ref: str, meter: str, amount: int) -> Balance:
    """Set a tenant root's limit for a meter (``credits.apply_root_limit`` decides the rest)."""
    org = await find_org(tx.conn, org_ref)
    return await apply_root_limit(tx, actor, org, meter, amount)
