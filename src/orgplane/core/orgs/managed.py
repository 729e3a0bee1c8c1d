"""Creating a managed child organization: the org, its first allocations, the person who runs
it, and a key for it, in one transaction.

The vendors each create a child as one call that does several things: Make names an owner and
gives operations, Sumo Logic names a contact who becomes its administrator and gives credits,
Datadog makes the calling user an administrator and mints a key. Every surface calls
``create_managed`` with what its request named, so the rules (reach, scopes, allocation, the
member's invitation, the key's defaults) are the core's, whichever surface asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orgplane.core.access.principal import Caller
from orgplane.core.credentials import service as credentials
from orgplane.core.credits.allocation import Allocation
from orgplane.core.errors import Forbidden
from orgplane.core.orgs import service as org_service
from orgplane.core.people import service as people
from orgplane.core.people import users as user_service
from orgplane.db.engine import Tx


@dataclass(frozen=True)
class Owner:
    """The person named to run the new org: added with ``role``, invited if new. ``scope`` is
    what naming them takes on the org (``users:write``; Sumo Logic's contact comes with the
    org, under ``orgs:write``)."""

    email: str
    profile: dict[str, Any]
    role: str
    scope: str = "users:write"


@dataclass(frozen=True)
class NewKey:
    """A key minted for the new org, with the creator's scopes and expiry; bound to the member
    who runs it, when there is one."""

    name: str
    kind: str


@dataclass(frozen=True)
class ManagedChild:
    org: Any
    allocations: list[Allocation]
    owner: people.Invited | None
    key: credentials.CreatedKey | None


async def create_managed(
    tx: Tx,
    *,
    actor: Caller,
    parent_ref: str | int,
    fields: dict[str, Any],
    max_depth: int,
    allocations: dict[str, int] | None = None,
    owner: Owner | None = None,
    creator_role: str | None = None,
    key: NewKey | None = None,
) -> ManagedChild:
    """A child of ``parent_ref`` with ``fields`` and ``allocations`` from the parent's pool;
    then ``owner`` added (or, with ``creator_role``, the user behind the calling key), and
    ``key`` minted for it. All or nothing."""
    child, given = await org_service.create_child_allocated(
        tx,
        actor=actor,
        parent_ref=parent_ref,
        fields=fields,
        max_depth=max_depth,
        allocations=allocations,
    )
    if creator_role is not None and owner is None:
        owner = await _creator(tx, actor, creator_role)
    invited = None
    if owner is not None:
        invited = await people.invite_member(
            tx,
            actor=actor,
            org_ref=child.public_id,
            email=owner.email,
            profile=owner.profile,
            roles=[owner.role],
            scope=owner.scope,
        )
    minted = None
    if key is not None:
        minted = await credentials.mint(
            tx,
            actor=actor,
            org_ref=child.public_id,
            name=key.name,
            kind=key.kind,
            user_ref=invited.member.row.public_id if invited is not None else None,
        )
    return ManagedChild(child, given, invited, minted)


async def _creator(tx: Tx, actor: Caller, role: str) -> Owner | None:
    """The user behind the calling key as the new org's ``role`` (None for a key of no user)."""
    principal = actor.principal
    if principal.user_id is None:
        return None
    creator = await user_service.public_id_by_key(tx.conn, principal.user_id)
    if creator is None:
        raise Forbidden("the user behind this key no longer exists")
    member = await user_service.get_member(tx.conn, principal, principal.org_public_id, creator)
    return Owner(email=member.row.email, profile={}, role=role)
