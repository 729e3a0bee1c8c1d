"""First run: a root org, an admin key with every scope and, when asked, the root's first owner
for the console (invited: the link lets them set a password), only on an empty database."""

from __future__ import annotations

from dataclasses import dataclass, replace

import sqlalchemy as sa

from orgplane.core.access import scopes
from orgplane.core.access.principal import SYSTEM_META, Actor, Caller, Principal
from orgplane.core.credentials import service as credentials
from orgplane.core.ids import hash_secret
from orgplane.core.orgs import service as org_service
from orgplane.core.people import service as people
from orgplane.db.engine import Database, Tx
from orgplane.models import orgs


@dataclass(frozen=True)
class Bootstrapped:
    org_id: str
    api_key: str
    key_id: str
    # The first owner's email and invitation token (for /console/invitations/{token}).
    owner_email: str | None = None
    owner_token: str | None = None


async def create_root_with_admin_key(
    tx: Tx,
    *,
    name: str,
    key_name: str = "admin",
    label: str = "bootstrap",
    owner_email: str | None = None,
) -> Bootstrapped:
    """A root org and its admin key; with ``owner_email``, that person invited as the root's
    owner by the admin key (the audit trail names the key)."""
    actor = Actor.system(label)
    root = await org_service.create_root(tx, actor, name=name)
    created = await credentials.mint(
        tx, actor=actor, org_ref=root.public_id, name=key_name, scopes=["*"], expires_at=None
    )
    done = Bootstrapped(org_id=root.public_id, api_key=created.secret, key_id=created.row.public_id)
    if owner_email is None:
        return done
    admin = Principal(
        key_pk=created.row.id,
        key_id=created.row.public_id,
        key_hash=hash_secret(created.secret),
        org_id=root.id,
        org_public_id=root.public_id,
        root_id=root.root_id,
        scopes=scopes.expand(created.row.scopes),
        name=created.row.name,
    )
    member, issued = await people.invite(
        tx, actor=Caller.of(admin, SYSTEM_META), org_ref=root.public_id, email=owner_email,
        profile={}, roles=["owner"],
    )  # fmt: skip
    return replace(done, owner_email=member.row.email, owner_token=issued.token)


async def bootstrap(
    db: Database, *, name: str = "Root", owner_email: str | None = None
) -> Bootstrapped | None:
    """Create the demo root and admin key (and invite ``owner_email`` as the root's owner)
    unless any org exists; None when there is one."""

    async def run(tx: Tx) -> Bootstrapped | None:
        if (await tx.execute(sa.select(orgs.c.id).limit(1))).first() is not None:
            return None
        return await create_root_with_admin_key(tx, name=name, owner_email=owner_email)

    return await db.transaction(run)
