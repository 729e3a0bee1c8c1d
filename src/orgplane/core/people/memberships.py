"""Memberships and the roles they hold: look-ups and the rules every change obeys.

Shared by users, roles and invitations, so that "who holds what in this org" and "an org is
never left without an owner or administrator" are decided in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from orgplane.core.access.principal import Principal
from orgplane.core.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from orgplane.core.people.capabilities import GUARDIAN_ROLES, SYSTEM_ROLES, expand, of_system_role
from orgplane.db.engine import Reader, Tx
from orgplane.models import membership_roles, memberships, orgs, roles, users

# A member as every surface shows them: the user's columns but the sealed TOTP seed (only the
# second factor's own commands read it), whether their second factor is on, since when they are
# a member.
MEMBER_COLUMNS = (
    *(c for c in users.c if c.name != "totp_secret"),
    users.c.totp_confirmed_at.is_not(None).label("mfa_enabled"),
    memberships.c.created_at.label("member_since"),
)


async def find_member(conn: Reader, org: Any, user_ref: str) -> Any:
    """The user ``user_ref`` (public id) as a member of ``org``, or 404."""
    row = (
        await conn.execute(
            sa.select(*MEMBER_COLUMNS)
            .select_from(users.join(memberships, memberships.c.user_id == users.c.id))
            .where(users.c.public_id == user_ref, memberships.c.org_id == org.id)
        )
    ).first()
    if row is None:
        raise NotFound(f"user {user_ref!r} not found in organization {org.public_id!r}")
    return row


async def roles_of(conn: Reader, org_id: int, user_ids: Iterable[int]) -> dict[int, list[str]]:
    """Each user's roles in the org: system keys first (in catalog order), then custom ids."""
    ids = list(user_ids)
    held: dict[int, list[str]] = {i: [] for i in ids}
    if not ids:
        return held
    rows = await conn.execute(
        sa.select(membership_roles.c.user_id, membership_roles.c.role).where(
            membership_roles.c.org_id == org_id, membership_roles.c.user_id.in_(ids)
        )
    )
    for row in rows:
        held[row.user_id].append(row.role)
    order = {key: i for i, key in enumerate(SYSTEM_ROLES)}
    for refs in held.values():
        refs.sort(key=lambda r: (order.get(r, len(order)), r))
    return held


async def set_roles(tx: Tx, org: Any, user_id: int, role_refs: Iterable[str]) -> None:
    """Replace the user's roles in the org with ``role_refs`` (already resolved)."""
    await tx.execute(
        sa.delete(membership_roles).where(
            membership_roles.c.org_id == org.id, membership_roles.c.user_id == user_id
        )
    )
    refs = sorted(set(role_refs))
    if refs:
        await tx.execute(
            sa.insert(membership_roles),
            [{"user_id": user_id, "org_id": org.id, "role": ref} for ref in refs],
        )


async def resolve_roles(
    conn: Reader, org: Any, refs: list[str], field: str = "roles"
) -> dict[str, tuple[str, ...]]:
    """Each role reference (a system key or the id of a role of this org) → its capabilities;
    an unknown reference is a 400 naming it."""
    custom = [r for r in refs if r not in SYSTEM_ROLES]
    found: dict[str, tuple[str, ...]] = {}
    if custom:
        rows = await conn.execute(
            sa.select(roles.c.public_id, roles.c.capabilities).where(
                roles.c.org_id == org.id, roles.c.public_id.in_(custom)
            )
        )
        found = {row.public_id: tuple(row.capabilities) for row in rows}
    errors = [
        FieldError(
            f"{field}[{i}]",
            f"unknown role {ref!r}: use a system role ({', '.join(SYSTEM_ROLES)}) "
            "or the id of a role of this organization",
        )
        for i, ref in enumerate(refs)
        if not isinstance(ref, str) or (ref not in SYSTEM_ROLES and ref not in found)
    ]
    if errors:
        raise InvalidInput("unknown role", errors=errors)
    return {ref: of_system_role(ref) if ref in SYSTEM_ROLES else found[ref] for ref in refs}


def check_grantable(principal: Principal, capabilities: Iterable[str]) -> None:
    """A user-bound principal cannot hand out capabilities it does not hold itself."""
    if principal.capabilities is None:
        return
    excess = sorted(expand(capabilities) - principal.capabilities)
    if excess:
        raise Forbidden(
            "you cannot grant capabilities your own roles do not grant: " + ", ".join(excess)
        )


async def ensure_guardian_left(
    conn: Reader, org: Any, user_id: int, remaining: Iterable[str] | None = None
) -> None:
    """409 when the change leaves ``org`` without a non-disabled owner or administrator.

    ``remaining`` is the roles the user keeps in the org (None: the user stops counting, as on
    removal or when disabled).
    """
    if remaining is not None and set(remaining) & set(GUARDIAN_ROLES):
        return
    guardians = (
        sa.select(sa.func.count(sa.distinct(membership_roles.c.user_id)))
        .select_from(membership_roles.join(users, users.c.id == membership_roles.c.user_id))
        .where(
            membership_roles.c.org_id == org.id,
            membership_roles.c.role.in_(GUARDIAN_ROLES),
            users.c.status != "disabled",
        )
    )
    holds = (await conn.execute(guardians.where(users.c.id == user_id))).scalar_one()
    if not holds:
        return
    others = (await conn.execute(guardians.where(users.c.id != user_id))).scalar_one()
    if not others:
        raise Conflict(
            f"this user is the last owner or administrator of organization {org.public_id!r}; "
            "give another member the owner or administrator role first"
        )


async def memberships_of(conn: Reader, user_id: int) -> list[Any]:
    """The user's memberships with each org's id, public id, path and root."""
    rows = await conn.execute(
        sa.select(orgs.c.id, orgs.c.public_id, orgs.c.path, orgs.c.root_id)
        .select_from(memberships.join(orgs, orgs.c.id == memberships.c.org_id))
        .where(memberships.c.user_id == user_id)
        .order_by(orgs.c.id)
    )
    return list(rows)


async def lock_orgs(tx: Tx, org_ids: Iterable[int]) -> None:
    """Lock these orgs' rows, in id order (the order every multi-org change takes them in), so
    that a decision about their memberships holds until commit."""
    ids = sorted(set(org_ids))
    if ids:
        await tx.execute(
            sa.select(orgs.c.id).where(orgs.c.id.in_(ids)).order_by(orgs.c.id).with_for_update()
        )


async def ensure_identity_reached(conn: Reader, principal: Principal, user_id: int) -> list[Any]:
    """A user is one identity across orgs: only a principal that reaches every org the user
    belongs to may change it (its name, its status). Returns the memberships."""
    held = await memberships_of(conn, user_id)
    if any(not principal.reaches(m.path) for m in held):
        raise Forbidden(
            "this user also belongs to organizations outside your reach; only their "
            "memberships here can be changed from this organization"
        )
    return held
