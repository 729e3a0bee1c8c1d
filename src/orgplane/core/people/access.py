"""What a user may do in an org: the capabilities of the roles they hold there."""

from __future__ import annotations

import sqlalchemy as sa

from orgplane.core.people.capabilities import SYSTEM_ROLES, expand, of_system_role
from orgplane.db.engine import Reader
from orgplane.models import membership_roles, memberships, roles, users

_MEMBER = (
    sa.select(users.c.status, users.c.locked_at, membership_roles.c.role, roles.c.capabilities)
    .select_from(
        users.join(
            memberships,
            sa.and_(
                memberships.c.user_id == users.c.id, memberships.c.org_id == sa.bindparam("org_id")
            ),
        )
        .outerjoin(
            membership_roles,
            sa.and_(
                membership_roles.c.user_id == memberships.c.user_id,
                membership_roles.c.org_id == memberships.c.org_id,
            ),
        )
        .outerjoin(roles, roles.c.public_id == membership_roles.c.role)
    )
    .where(users.c.id == sa.bindparam("user_id"))
)


async def user_capabilities(conn: Reader, user_id: int, org_id: int) -> frozenset[str] | None:
    """The user's capabilities in the org, or None when the user may not act there at all
    (not a member, disabled, locked, or not yet active)."""
    rows = (await conn.execute(_MEMBER, {"user_id": user_id, "org_id": org_id})).all()
    if not rows or rows[0].status != "active" or rows[0].locked_at is not None:
        return None
    held: list[str] = []
    for row in rows:
        if row.role in SYSTEM_ROLES:
            held.extend(of_system_role(row.role))
        elif row.capabilities:
            held.extend(row.capabilities)
    return expand(held)
