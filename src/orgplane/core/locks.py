"""The tenant tree lock, taken first by every write that depends on the tree's shape."""

from __future__ import annotations

import sqlalchemy as sa

from orgplane.db.engine import PreparedSelect, Tx
from orgplane.models import orgs

_ROOT = sa.select(orgs.c.id).where(orgs.c.id == sa.bindparam("root_id"))
# Run on the driver (``Tx.fetch``): every allocation and every usage batch takes it, and
# SQLAlchemy's execution of a statement costs several times the round trip itself.
_LOCK_SHARED = PreparedSelect(_ROOT.with_for_update(read=True, key_share=True))
_LOCK_EXCLUSIVE = PreparedSelect(_ROOT.with_for_update())


async def lock_tree(tx: Tx, root_id: int, *, shared: bool = False) -> None:
    """Lock the tenant root row (PostgreSQL): FOR UPDATE for a structural change (move, delete,
    restore, deactivate), FOR KEY SHARE for writes that only need the shape to hold still
    (create, allocate, ingest) — those do not block each other."""
    if tx.is_postgres:
        await tx.fetch(_LOCK_SHARED if shared else _LOCK_EXCLUSIVE, {"root_id": root_id})
