"""The credentials table's statements; the rules that decide them are in ``service``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from orgplane.db.engine import Reader, Tx
from orgplane.models import credentials, orgs, users
from orgplane.models.base import utcnow

KEY_COLUMNS = (
    credentials.c.id,
    credentials.c.public_id,
    credentials.c.org_id,
    credentials.c.root_id,
    credentials.c.kind,
    credentials.c.name,
    credentials.c.hint,
    credentials.c.scopes,
    credentials.c.created_at,
    credentials.c.expires_at,
    credentials.c.last_used_at,
    credentials.c.revoked_at,
    credentials.c.user_id,
    sa.select(users.c.public_id)
    .where(users.c.id == credentials.c.user_id)
    .scalar_subquery()
    .label("user_public_id"),
)


async def insert(tx: Tx, values: dict[str, Any]) -> Any:
    """Store a new key; its row as ``KEY_COLUMNS`` reads it."""
    key_id = (
        await tx.execute(sa.insert(credentials).values(values).returning(credentials.c.id))
    ).scalar_one()
    return (await tx.execute(sa.select(*KEY_COLUMNS).where(credentials.c.id == key_id))).one()


async def page(
    conn: Reader, org_id: int, *, after: int | None, limit: int, include_revoked: bool
) -> list[Any]:
    """Up to ``limit`` + 1 keys of the org after the key ``after``, oldest first."""
    statement = sa.select(*KEY_COLUMNS).where(credentials.c.org_id == org_id)
    if not include_revoked:
        statement = statement.where(credentials.c.revoked_at.is_(None))
    if after is not None:
        statement = statement.where(credentials.c.id > after)
    return list((await conn.execute(statement.order_by(credentials.c.id).limit(limit + 1))).all())


async def every_key_of(conn: Reader, org_ref: str) -> list[Any]:
    """Every key of the org named ``org_ref`` (deleted orgs and revoked keys too), oldest first:
    the operator's listing."""
    statement = (
        sa.select(*KEY_COLUMNS)
        .select_from(credentials.join(orgs, orgs.c.id == credentials.c.org_id))
        .where(orgs.c.public_id == org_ref)
        .order_by(credentials.c.id)
    )
    return list((await conn.execute(statement)).all())


async def find_for_update(tx: Tx, key_ref: str, *, org_id: int | None) -> Any:
    """The key ``key_ref`` with its hash, in the org ``org_id`` (None: in any org), locked
    against a concurrent revocation on PostgreSQL."""
    statement = sa.select(*KEY_COLUMNS, credentials.c.key_hash).where(
        credentials.c.public_id == key_ref
    )
    if org_id is not None:
        statement = statement.where(credentials.c.org_id == org_id)
    if tx.is_postgres:
        statement = statement.with_for_update(of=credentials)
    return (await tx.execute(statement)).first()


async def mark_revoked(tx: Tx, key_pk: int) -> None:
    await tx.execute(
        sa.update(credentials).where(credentials.c.id == key_pk).values(revoked_at=utcnow())
    )


async def other_live_scopes(tx: Tx, org_id: int, *, except_pk: int) -> list[Any]:
    """The scopes of every other live key of the org: not revoked, not expired."""
    statement = sa.select(credentials.c.scopes).where(
        credentials.c.org_id == org_id,
        credentials.c.id != except_pk,
        credentials.c.revoked_at.is_(None),
        sa.or_(credentials.c.expires_at.is_(None), credentials.c.expires_at > utcnow()),
    )
    return list((await tx.execute(statement)).scalars().all())
