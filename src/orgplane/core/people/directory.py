"""Members of an org as numbered pages with counts, for surfaces that page by number (Datadog's
``page[number]``/``page[size]``) and show totals, where the native API pages by cursor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orgplane.core.access.principal import Principal
from orgplane.core.access.service import reach
from orgplane.core.errors import InvalidInput
from orgplane.core.people import memberships as ms
from orgplane.core.people import repository
from orgplane.core.people.users import Member
from orgplane.db.engine import Reader
from orgplane.models import membership_roles, memberships, users
from orgplane.models.people import USER_STATUSES

MAX_OFFSET = 100_000
SORT_KEYS: dict[str, Any] = {
    "name": sa.func.lower(users.c.first_name + " " + users.c.last_name),
    "email": users.c.email_normalized,
    "status": users.c.status,
    "created_at": users.c.created_at,
    "modified_at": users.c.modified_at,
}


@dataclass(frozen=True)
class MemberPage:
    members: list[Member]
    total: int  # members of the org (holding ``role``, when given)
    filtered: int  # of those, the ones matching the text and status filters


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def page_members(
    conn: Reader,
    principal: Principal,
    org_ref: str,
    *,
    offset: int,
    limit: int,
    sort: str = "name",
    descending: bool = False,
    text: str | None = None,
    statuses: Sequence[str] = (),
    role: str | None = None,
) -> MemberPage:
    """One page of the org's members, sorted by ``sort``, filtered by a case-insensitive
    substring of email or name, by status and by a role they hold."""
    org = await reach(conn, principal, org_ref, scope="users:read")
    if sort not in SORT_KEYS:
        raise InvalidInput.for_field("query.sort", f"must be one of {', '.join(SORT_KEYS)}")
    unknown = [s for s in statuses if s not in USER_STATUSES]
    if unknown:
        raise InvalidInput.for_field(
            "query.filter[status]", f"unknown status {unknown[0]!r}; use {', '.join(USER_STATUSES)}"
        )
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput.for_field("query.page", f"must reach at most {MAX_OFFSET} users in")
    base = (
        sa.select(*ms.MEMBER_COLUMNS)
        .select_from(users.join(memberships, memberships.c.user_id == users.c.id))
        .where(memberships.c.org_id == org.id)
    )
    if role is not None:
        base = base.where(
            sa.exists().where(
                membership_roles.c.org_id == org.id,
                membership_roles.c.user_id == users.c.id,
                membership_roles.c.role == role,
            )
        )
    filtered = base
    if text:
        pattern = _like(text)
        filtered = filtered.where(
            sa.or_(
                users.c.email_normalized.like(pattern, escape="\\"),
                sa.func.lower(users.c.first_name + " " + users.c.last_name).like(
                    pattern, escape="\\"
                ),
            )
        )
    if statuses:
        filtered = filtered.where(users.c.status.in_(list(statuses)))
    total = await _count(conn, base)
    matching = await _count(conn, filtered) if filtered is not base else total
    key = SORT_KEYS[sort]
    order = (key.desc(), users.c.id.desc()) if descending else (key.asc(), users.c.id.asc())
    rows = list((await conn.execute(filtered.order_by(*order).offset(offset).limit(limit))).all())
    held = await ms.roles_of(conn, org.id, [r.id for r in rows])
    members = [Member(r, held[r.id], org.public_id) for r in rows]
    return MemberPage(members, total, matching)


async def _count(conn: Reader, statement: Any) -> int:
    count: int = (
        await conn.execute(sa.select(sa.func.count()).select_from(statement.subquery()))
    ).scalar_one()
    return count


async def search(
    conn: Reader,
    principal: Principal,
    org_ref: str,
    *,
    where: Any,
    sort: str | None,
    descending: bool,
    offset: int,
    limit: int,
) -> tuple[list[Member], int]:
    """One page of the org's members matching ``where`` (``repository.user_filter_clause``),
    sorted by a ``repository.MEMBER_SORTS`` key, and the number matching in all."""
    org = await reach(conn, principal, org_ref, scope="users:read")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput.for_field("startIndex", f"must be at most {MAX_OFFSET + 1}")
    rows, total = await repository.search_members(
        conn, org, where=where, sort=sort, descending=descending, offset=offset, limit=limit
    )
    held = await ms.roles_of(conn, org.id, [r.id for r in rows])
    return [Member(r, held[r.id], org.public_id) for r in rows], total
