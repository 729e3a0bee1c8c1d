"""The tenant tree lock, taken first by every write that depends on the tree's shape."""

from __future__ import annotations

import sqlalchemy as sa

from orgplane.db.engine import Tx
from orgplane.models import orgs


async def lock_tree(tx: Tx, root_id: int, *, shared: bool = False) -> None:
    """Lock the tenant root row (PostgreSQL): FOR UPDATE for a structural change (move, delete,
    restore, deactivate), FOR KEY SHARE for writes that only need the shape to hold still
    (create, allocate, ingest) — those do not block each other."""
    if tx.is_postgres:
        statement = sa.select(orgs.c.id).where(orgs.c.id == root_id)
        await tx.execute(statement.with_for_update(read=shared, key_share=shared))
