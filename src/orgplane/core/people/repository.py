"""People's SQL: users and memberships read and written, the keys and invitations that follow a
member, the mapping of unique violations, and the member search behind SCIM's filters.

The rules are the services' (``users``, ``invitations``, ``roles``, ``service``); the role
catalogue and role grants are ``memberships``'."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from scim2_models.path import (
    CompareOperator,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
)
from sqlalchemy.exc import IntegrityError

from orgplane.core.errors import Conflict
from orgplane.core.ids import new_public_id
from orgplane.core.people.memberships import MEMBER_COLUMNS
from orgplane.db.engine import Reader, Tx
from orgplane.models import (
    credentials,
    invitations,
    membership_roles,
    memberships,
    orgs,
    roles,
    user_tokens,
    users,
)
from orgplane.models.base import utcnow


@contextmanager
def unique(message: str) -> Iterator[None]:
    """A unique violation inside the block (a concurrent writer inserted the same user,
    membership, role name or email first, after this transaction's own check) is a 409.

    The transaction is not usable after it (PostgreSQL aborts it), so the 409 ends it."""
    try:
        yield
    except IntegrityError:
        raise Conflict(message) from None


# --- users and memberships -------------------------------------------------------------------


async def user_by_email(conn: Reader | Tx, normalized: str) -> Any:
    return (
        await conn.execute(sa.select(users).where(users.c.email_normalized == normalized))
    ).first()


async def user_public_id(conn: Reader | Tx, user_id: int) -> str | None:
    value: str | None = (
        await conn.execute(sa.select(users.c.public_id).where(users.c.id == user_id))
    ).scalar()
    return value


async def insert_user(
    tx: Tx, *, email: str, normalized: str, profile: dict[str, str], by: str
) -> int:
    """A pending identity; its integer key."""
    now = utcnow()
    user_id: int = (
        await tx.execute(
            sa.insert(users)
            .values(
                public_id=new_public_id("usr_"),
                email=email,
                email_normalized=normalized,
                first_name=profile.get("first_name", ""),
                last_name=profile.get("last_name", ""),
                title=profile.get("title", ""),
                status="pending",
                created_at=now,
                modified_at=now,
                created_by=by,
                modified_by=by,
            )
            .returning(users.c.id)
        )
    ).scalar_one()
    return user_id


async def write_user(tx: Tx, user_id: int, values: dict[str, Any], *, by: str) -> None:
    """Change the identity's columns; a new version, who changed it and when."""
    await tx.execute(
        sa.update(users)
        .where(users.c.id == user_id)
        .values(**values, modified_at=utcnow(), modified_by=by, version=users.c.version + 1)
    )


async def is_member(conn: Reader | Tx, user_id: int, org_id: int) -> bool:
    found = (
        await conn.execute(
            sa.select(memberships.c.user_id).where(
                memberships.c.user_id == user_id, memberships.c.org_id == org_id
            )
        )
    ).first()
    return found is not None


async def insert_membership(tx: Tx, user_id: int, org: Any) -> None:
    await tx.execute(
        sa.insert(memberships).values(
            user_id=user_id, org_id=org.id, root_id=org.root_id, created_at=utcnow()
        )
    )


async def delete_membership(tx: Tx, org_id: int, user_id: int) -> None:
    """The membership and its role grants."""
    await tx.execute(
        sa.delete(membership_roles).where(
            membership_roles.c.org_id == org_id, membership_roles.c.user_id == user_id
        )
    )
    await tx.execute(
        sa.delete(memberships).where(
            memberships.c.org_id == org_id, memberships.c.user_id == user_id
        )
    )


async def members_page(
    conn: Reader,
    org_id: int,
    *,
    sort: Any,
    email: str | None,
    status: str | None,
    role: str | None,
    after: tuple[Any, ...] | None,
    limit: int,
) -> list[Any]:
    """Up to ``limit`` members ordered by ``sort`` (then id) after the keyset ``after``, with
    a part of the email, a status and a role to filter by; each row has its ``sort_key``."""
    statement = (
        sa.select(*MEMBER_COLUMNS, sort.label("sort_key"))
        .select_from(users.join(memberships, memberships.c.user_id == users.c.id))
        .where(memberships.c.org_id == org_id)
    )
    if email:
        pattern = f"%{_like(email.lower())}%"
        statement = statement.where(users.c.email_normalized.like(pattern, escape="\\"))
    if status:
        statement = statement.where(users.c.status == status)
    if role:
        statement = statement.where(
            sa.exists().where(
                membership_roles.c.org_id == org_id,
                membership_roles.c.user_id == users.c.id,
                membership_roles.c.role == role,
            )
        )
    if after is not None:
        statement = statement.where(sa.tuple_(sort, users.c.id) > sa.tuple_(after[0], after[1]))
    return list((await conn.execute(statement.order_by(sort, users.c.id).limit(limit))).all())


# --- what follows a member: keys, sessions, invitations ----------------------------------------


async def credential_hashes(conn: Reader | Tx, user_id: int) -> list[str]:
    """The hashes of the user's live API keys and sessions."""
    keys = await conn.execute(
        sa.select(credentials.c.key_hash).where(
            credentials.c.user_id == user_id, credentials.c.revoked_at.is_(None)
        )
    )
    sessions = await conn.execute(
        sa.select(user_tokens.c.token_hash).where(
            user_tokens.c.user_id == user_id,
            user_tokens.c.kind == "session",
            user_tokens.c.used_at.is_(None),
        )
    )
    return [*keys.scalars(), *sessions.scalars()]


async def bound_keys(conn: Reader | Tx, org_id: int, user_id: int) -> list[Any]:
    """The org's live keys bound to the user: id, public id, hash."""
    return list(
        await conn.execute(
            sa.select(credentials.c.id, credentials.c.public_id, credentials.c.key_hash).where(
                credentials.c.org_id == org_id,
                credentials.c.user_id == user_id,
                credentials.c.revoked_at.is_(None),
            )
        )
    )


async def rebind_keys(tx: Tx, key_ids: list[int], heir_id: int | None) -> None:
    """Bind these keys to ``heir_id``, or revoke them (None)."""
    values: dict[str, Any] = {"user_id": heir_id} if heir_id else {"revoked_at": utcnow()}
    await tx.execute(sa.update(credentials).where(credentials.c.id.in_(key_ids)).values(values))


async def revoke_open_invitations(tx: Tx, org_id: int, user_id: int) -> None:
    await tx.execute(
        sa.update(invitations)
        .where(
            invitations.c.org_id == org_id,
            invitations.c.user_id == user_id,
            invitations.c.accepted_at.is_(None),
            invitations.c.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )


# --- invitations -------------------------------------------------------------------------------

INVITATION_COLUMNS = (*invitations.c, users.c.public_id.label("user_public_id"), users.c.email)
_INVITATIONS = invitations.join(users, users.c.id == invitations.c.user_id)


async def invitation(conn: Reader | Tx, invitation_id: int) -> Any:
    return (
        await conn.execute(
            sa.select(*INVITATION_COLUMNS)
            .select_from(_INVITATIONS)
            .where(invitations.c.id == invitation_id)
        )
    ).one()


async def insert_invitation(
    tx: Tx,
    *,
    org: Any,
    user_id: int,
    roles: list[str],
    token_hash: str,
    by: str,
    expires_at: Any,
) -> int:
    invitation_id: int = (
        await tx.execute(
            sa.insert(invitations)
            .values(
                public_id=new_public_id("inv_"),
                token_hash=token_hash,
                org_id=org.id,
                root_id=org.root_id,
                user_id=user_id,
                roles=roles,
                invited_by=by,
                created_at=utcnow(),
                expires_at=expires_at,
            )
            .returning(invitations.c.id)
        )
    ).scalar_one()
    return invitation_id


async def invitation_in_org(
    conn: Reader | Tx, org_id: int, invitation_ref: str, *, lock: bool = False
) -> Any:
    """The org's invitation with this public id (None), its row locked with ``lock``."""
    statement = (
        sa.select(*INVITATION_COLUMNS)
        .select_from(_INVITATIONS)
        .where(invitations.c.org_id == org_id, invitations.c.public_id == invitation_ref)
    )
    if lock:
        statement = statement.with_for_update(of=invitations)
    return (await conn.execute(statement)).first()


async def invitations_page(
    conn: Reader, org_id: int, *, after: int | None, limit: int
) -> list[Any]:
    statement = (
        sa.select(*INVITATION_COLUMNS)
        .select_from(_INVITATIONS)
        .where(invitations.c.org_id == org_id)
    )
    if after is not None:
        statement = statement.where(invitations.c.id > after)
    return list((await conn.execute(statement.order_by(invitations.c.id).limit(limit))).all())


async def invitation_by_token(tx: Tx, token_hash: str, *, lock: bool) -> Any:
    """The invitation with this token (None), with its org's public id."""
    statement = (
        sa.select(*INVITATION_COLUMNS, orgs.c.public_id.label("org_public_id"))
        .select_from(_INVITATIONS.join(orgs, orgs.c.id == invitations.c.org_id))
        .where(invitations.c.token_hash == token_hash)
    )
    if lock:
        statement = statement.with_for_update(of=invitations)
    return (await tx.execute(statement)).first()


async def latest_open_invitation(conn: Reader | Tx, org_id: int, user_id: int) -> str | None:
    """The public id of the user's newest invitation to the org still open, or None."""
    value: str | None = (
        await conn.execute(
            sa.select(invitations.c.public_id)
            .where(
                invitations.c.org_id == org_id,
                invitations.c.user_id == user_id,
                invitations.c.accepted_at.is_(None),
                invitations.c.revoked_at.is_(None),
            )
            .order_by(invitations.c.id.desc())
            .limit(1)
        )
    ).scalar()
    return value


async def renew_invitation(tx: Tx, invitation_id: int, token_hash: str, expires_at: Any) -> None:
    await tx.execute(
        sa.update(invitations)
        .where(invitations.c.id == invitation_id)
        .values(token_hash=token_hash, expires_at=expires_at)
    )


async def revoke_invitation(tx: Tx, invitation_id: int) -> None:
    await tx.execute(
        sa.update(invitations).where(invitations.c.id == invitation_id).values(revoked_at=utcnow())
    )


async def mark_accepted(tx: Tx, invitation_id: int) -> bool:
    """Accept the invitation unless it was accepted already (False then)."""
    done = await tx.execute(
        sa.update(invitations)
        .where(invitations.c.id == invitation_id, invitations.c.accepted_at.is_(None))
        .values(accepted_at=utcnow())
    )
    return bool(done.rowcount == 1)


async def lock_user(tx: Tx, user_id: int) -> Any:
    return (await tx.execute(sa.select(users).where(users.c.id == user_id).with_for_update())).one()


# --- roles -------------------------------------------------------------------------------------


async def holder_counts(conn: Reader | Tx, org_id: int, refs: list[str]) -> dict[str, int]:
    """How many members of the org hold each of these roles (absent: none)."""
    rows = await conn.execute(
        sa.select(membership_roles.c.role, sa.func.count().label("holders"))
        .where(membership_roles.c.org_id == org_id, membership_roles.c.role.in_(refs))
        .group_by(membership_roles.c.role)
    )
    return {row.role: int(row.holders) for row in rows}


async def role_holders(conn: Reader | Tx, org_id: int, role: str) -> set[str]:
    """The public ids of the members holding the role."""
    rows = await conn.execute(
        sa.select(users.c.public_id)
        .select_from(membership_roles.join(users, users.c.id == membership_roles.c.user_id))
        .where(membership_roles.c.org_id == org_id, membership_roles.c.role == role)
    )
    return set(rows.scalars())


async def custom_roles(conn: Reader | Tx, org_id: int) -> list[Any]:
    return list(
        await conn.execute(
            sa.select(roles).where(roles.c.org_id == org_id).order_by(roles.c.name_normalized)
        )
    )


async def custom_role(conn: Reader | Tx, org_id: int, role_ref: str) -> Any:
    return (
        await conn.execute(
            sa.select(roles).where(roles.c.org_id == org_id, roles.c.public_id == role_ref)
        )
    ).first()


async def role_named(
    conn: Reader | Tx, org_id: int, name_normalized: str, *, except_id: int | None = None
) -> Any:
    """The org's custom role of this name (None), other than ``except_id``."""
    statement = sa.select(roles.c.public_id).where(
        roles.c.org_id == org_id, roles.c.name_normalized == name_normalized
    )
    if except_id is not None:
        statement = statement.where(roles.c.id != except_id)
    return (await conn.execute(statement)).first()


async def count_custom_roles(conn: Reader | Tx, org_id: int) -> int:
    return int(
        (
            await conn.execute(sa.select(sa.func.count()).where(roles.c.org_id == org_id))
        ).scalar_one()
    )


async def insert_role(
    tx: Tx, *, org: Any, name: str, description: str, capabilities: list[str]
) -> Any:
    now = utcnow()
    role_id = (
        await tx.execute(
            sa.insert(roles)
            .values(
                public_id=new_public_id("rol_"),
                org_id=org.id,
                root_id=org.root_id,
                name=name,
                name_normalized=name.lower(),
                description=description,
                capabilities=capabilities,
                created_at=now,
                modified_at=now,
            )
            .returning(roles.c.id)
        )
    ).scalar_one()
    return (await tx.execute(sa.select(roles).where(roles.c.id == role_id))).one()


async def write_role(tx: Tx, role_id: int, values: dict[str, Any]) -> Any:
    """Change the role's columns; the row after."""
    await tx.execute(
        sa.update(roles).where(roles.c.id == role_id).values(**values, modified_at=utcnow())
    )
    return (await tx.execute(sa.select(roles).where(roles.c.id == role_id))).one()


async def delete_role(tx: Tx, role_id: int) -> None:
    await tx.execute(sa.delete(roles).where(roles.c.id == role_id))


async def grant_role(tx: Tx, org_id: int, user_id: int, role: str) -> None:
    await tx.execute(sa.insert(membership_roles).values(user_id=user_id, org_id=org_id, role=role))


async def revoke_role(tx: Tx, org_id: int, user_id: int, role: str) -> None:
    await tx.execute(
        sa.delete(membership_roles).where(
            membership_roles.c.org_id == org_id,
            membership_roles.c.user_id == user_id,
            membership_roles.c.role == role,
        )
    )


# --- member search (SCIM filters) -------------------------------------------------------------

# A SCIM User attribute → the column it is shown from. Strings compare case-insensitively
# (RFC 7643: caseExact false), so each is matched in lower case; an empty profile field is
# shown as absent. ``id`` is case-exact.
_LOWER_TEXT: dict[str, Any] = {
    "username": users.c.email_normalized,
    "emails": users.c.email_normalized,
    "emails.value": users.c.email_normalized,
}
_PROFILE_TEXT: dict[str, Any] = {
    "name.givenname": users.c.first_name,
    "name.familyname": users.c.last_name,
    "title": users.c.title,
}
# What SCIM's sortBy may name, and the member column it orders by.
MEMBER_SORTS: dict[str, Any] = {
    "username": users.c.email_normalized,
    "emails.value": users.c.email_normalized,
    "name.givenname": sa.func.lower(users.c.first_name),
    "name.familyname": sa.func.lower(users.c.last_name),
}


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _text_match(column: Any, op: CompareOperator, value: str) -> Any:
    pattern = _like(value)
    if op == CompareOperator.eq:
        return column == value
    if op == CompareOperator.ne:
        return column != value
    if op == CompareOperator.co:
        return column.like(f"%{pattern}%", escape="\\")
    if op == CompareOperator.sw:
        return column.like(f"{pattern}%", escape="\\")
    if op == CompareOperator.ew:
        return column.like(f"%{pattern}", escape="\\")
    return None


def _path(node: Any) -> str:
    path = node.attr_path
    if path.uri and path.uri.lower() != "urn:ietf:params:scim:schemas:core:2.0:user":
        return ""
    return f"{path.attr}.{path.sub_attr}" if path.sub_attr else path.attr


def user_filter_clause(node: FilterNode) -> Any | None:
    """The SQL condition on ``users`` equivalent to a SCIM User filter, or None when the filter
    uses anything it does not translate (the caller then evaluates it the slow way).

    Translated: and/or/not; ``pr``; eq/ne/co/sw/ew on userName, emails(.value), id, and
    (except ``ne``) name.givenName, name.familyName, title; eq/ne on active."""
    if isinstance(node, LogicalExpr):
        translated = [user_filter_clause(t) for t in node.terms]
        terms: list[Any] = [t for t in translated if t is not None]
        if len(terms) != len(translated):
            return None
        return sa.and_(*terms) if node.op == LogicalOperator.and_ else sa.or_(*terms)
    if isinstance(node, Not):
        inner = user_filter_clause(node.expr)
        return None if inner is None else sa.not_(inner)
    if isinstance(node, Present):
        path = _path(node).lower()
        if path in _LOWER_TEXT or path in ("id", "active", "username"):
            return sa.true()
        if path in _PROFILE_TEXT:
            return _PROFILE_TEXT[path] != ""
        return None
    if not isinstance(node, Comparison):
        return None
    path, op, value = _path(node).lower(), node.op, node.value
    if path == "active":
        if not isinstance(value, bool) or op not in (CompareOperator.eq, CompareOperator.ne):
            return None
        active = users.c.status != "disabled"
        return active if (op == CompareOperator.eq) == value else sa.not_(active)
    # Non-text values and non-ASCII text (SQLite lowers ASCII only) take the slow way.
    if not isinstance(value, str) or not value or not value.isascii():
        return None
    if path == "id":
        return _text_match(users.c.public_id, op, value)
    if path in _LOWER_TEXT:
        return _text_match(_LOWER_TEXT[path], op, value.lower())
    if path in _PROFILE_TEXT and op != CompareOperator.ne:
        return _text_match(sa.func.lower(_PROFILE_TEXT[path]), op, value.lower())
    return None


async def search_members(
    conn: Reader,
    org: Any,
    *,
    where: Any,
    sort: str | None,
    descending: bool,
    offset: int,
    limit: int,
) -> tuple[list[Any], int]:
    """One page of the org's members matching ``where`` (a ``user_filter_clause``), in
    ``sort`` order (a ``MEMBER_SORTS`` key; ties, and no sort, by email then id), and how many
    match in all."""
    base = (
        sa.select(*MEMBER_COLUMNS)
        .select_from(users.join(memberships, memberships.c.user_id == users.c.id))
        .where(memberships.c.org_id == org.id)
    )
    if where is not None:
        base = base.where(where)
    total: int = (
        await conn.execute(sa.select(sa.func.count()).select_from(base.subquery()))
    ).scalar_one()
    order = [users.c.email_normalized, users.c.id]
    if sort is not None:
        key = MEMBER_SORTS[sort]
        order.insert(0, key.desc() if descending else key)
    rows = list((await conn.execute(base.order_by(*order).offset(offset).limit(limit))).all())
    return rows, total
