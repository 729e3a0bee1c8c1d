"""First run: a root org and an admin key with every scope, only on an empty database."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from orgplane.core.access.principal import Actor
from orgplane.core.credentials import service as credentials
from orgplane.core.orgs import service as org_service
from orgplane.db.engine import Database, Tx
from orgplane.models import orgs


@dataclass(frozen=True)
class Bootstrapped:
    org_id: str
    api_key: str
    key_id: str


async def create_root_with_admin_key(
    tx: Tx, *, name: str, key_name: str = "admin", label: str = "bootstrap"
) -> Bootstrapped:
    actor = Actor.system(label)
    root = await org_service.create_root(tx, actor, name=name)
    created = await credentials.mint(
        tx, actor=actor, org_ref=root.public_id, name=key_name, scopes=["*"], expires_at=None
    )
    return Bootstrapped(org_id=root.public_id, api_key=created.secret, key_id=created.row.public_id)


async def bootstrap(db: Database, *, name: str = "Root") -> Bootstrapped | None:
    """Create the demo root and admin key unless any org exists; None when there is one."""

    async def run(tx: Tx) -> Bootstrapped | None:
        if (await tx.execute(sa.select(orgs.c.id).limit(1))).first() is not None:
            return None
        return await create_root_with_admin_key(tx, name=name)

    return await db.transaction(run)
