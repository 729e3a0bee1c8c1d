"""The SQL of sign-in: the user's sign-in state, sessions and one-time tokens (password reset,
email change). The rules (lockout, token lifetimes, audit) are ``auth``'s."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orgplane.db.engine import Reader, Tx
from orgplane.models import memberships, orgs, user_tokens, users
from orgplane.models.base import utcnow

_USER_FOR_LOGIN = sa.select(
    users.c.id,
    users.c.public_id,
    users.c.email,
    users.c.first_name,
    users.c.last_name,
    users.c.status,
    users.c.locked_at,
    users.c.password_hash,
).where(users.c.email_normalized == sa.bindparam("email"))


async def user_for_login(conn: Reader, normalized_email: str) -> Any:
    return (await conn.execute(_USER_FOR_LOGIN, {"email": normalized_email})).first()


async def member_orgs(conn: Reader | Tx, user_pk: int) -> list[Any]:
    """The user's memberships' orgs, oldest membership first (the default session org)."""
    rows = await conn.execute(
        sa.select(
            orgs.c.id, orgs.c.public_id, orgs.c.name, orgs.c.root_id, orgs.c.status, orgs.c.path
        )
        .select_from(memberships.join(orgs, orgs.c.id == memberships.c.org_id))
        .where(memberships.c.user_id == user_pk, orgs.c.deleted_at.is_(None))
        .order_by(memberships.c.created_at, memberships.c.org_id)
    )
    return list(rows.all())


async def public_id(conn: Reader | Tx, user_pk: int) -> str:
    value: str = (
        await conn.execute(sa.select(users.c.public_id).where(users.c.id == user_pk))
    ).scalar_one()
    return value


async def identity(conn: Reader | Tx, user_pk: int) -> Any:
    """The user's public id and email."""
    return (
        await conn.execute(sa.select(users.c.public_id, users.c.email).where(users.c.id == user_pk))
    ).one()


async def lock_user_state(tx: Tx, user_pk: int) -> Any:
    """The user's public id, status, lock and second factor, the row locked until commit: the
    sign-in lock, that also makes a one-time code good for one sign-in only."""
    return (
        await tx.execute(
            sa.select(
                users.c.id,
                users.c.public_id,
                users.c.email,
                users.c.status,
                users.c.locked_at,
                users.c.totp_secret,
                users.c.totp_confirmed_at,
                users.c.totp_last_step,
            )
            .where(users.c.id == user_pk)
            .with_for_update()
        )
    ).one()


async def set_user_columns(
    tx: Tx, user_pk: int, values: dict[str, Any], *, new_version: bool = False
) -> None:
    """Write the user's columns; ``new_version`` for a change of the identity itself (a new
    version and modification time), not for sign-in bookkeeping (failure counts, last sign-in)."""
    if new_version:
        values = {**values, "modified_at": utcnow(), "version": users.c.version + 1}
    await tx.execute(sa.update(users).where(users.c.id == user_pk).values(**values))


async def email_taken(conn: Reader | Tx, normalized_email: str, user_pk: int) -> bool:
    """Whether another user has this email."""
    other = await conn.execute(
        sa.select(users.c.id).where(
            users.c.email_normalized == normalized_email, users.c.id != user_pk
        )
    )
    return other.first() is not None


async def count_failure(tx: Tx, user_pk: int, *, now: datetime, window_start: datetime) -> Any:
    """Count one failed sign-in atomically (concurrent failures each count): a failure after
    the window starts a new count. The count and the lock after it."""
    stale = sa.or_(users.c.failed_since.is_(None), users.c.failed_since < window_start)
    return (
        await tx.execute(
            sa.update(users)
            .where(users.c.id == user_pk)
            .values(
                failed_logins=sa.case((stale, 1), else_=users.c.failed_logins + 1),
                failed_since=sa.case((stale, now), else_=users.c.failed_since),
            )
            .returning(users.c.failed_logins, users.c.locked_at)
        )
    ).one()


async def lock_account(tx: Tx, user_pk: int, now: datetime) -> bool:
    """Lock the account unless it is locked already (False then)."""
    locked = await tx.execute(
        sa.update(users)
        .where(users.c.id == user_pk, users.c.locked_at.is_(None))
        .values(locked_at=now, modified_at=now, version=users.c.version + 1)
    )
    return bool(locked.rowcount)


async def insert_session(
    tx: Tx,
    *,
    token_hash: str,
    user_id: int,
    org_id: int,
    expires_at: datetime,
    data: dict[str, Any] | None = None,
) -> int:
    session_pk: int = (
        await tx.execute(
            sa.insert(user_tokens)
            .values(
                token_hash=token_hash,
                kind="session",
                user_id=user_id,
                org_id=org_id,
                data=data if data is not None else sa.null(),
                created_at=utcnow(),
                expires_at=expires_at,
            )
            .returning(user_tokens.c.id)
        )
    ).scalar_one()
    return session_pk


async def end_session(tx: Tx, session_pk: int) -> list[str]:
    """End one session; its hash (none when it had ended already)."""
    ended = await tx.execute(
        sa.update(user_tokens)
        .where(user_tokens.c.id == session_pk, user_tokens.c.used_at.is_(None))
        .values(used_at=utcnow())
        .returning(user_tokens.c.token_hash)
    )
    return list(ended.scalars())


async def end_sessions(tx: Tx, user_pk: int) -> list[str]:
    """End every live session of the user; their hashes."""
    return await end_tokens(tx, user_pk, "session")


async def end_tokens(tx: Tx, user_pk: int, kind: str) -> list[str]:
    """Use up every unused token of this kind of the user; their hashes."""
    ended = await tx.execute(
        sa.update(user_tokens)
        .where(
            user_tokens.c.user_id == user_pk,
            user_tokens.c.kind == kind,
            user_tokens.c.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .returning(user_tokens.c.token_hash)
    )
    return list(ended.scalars())


async def insert_token(
    tx: Tx, *, token_hash: str, kind: str, user_id: int, data: Any, ttl: timedelta
) -> None:
    now = utcnow()
    await tx.execute(
        sa.insert(user_tokens).values(
            token_hash=token_hash,
            kind=kind,
            user_id=user_id,
            org_id=None,
            data=data,
            created_at=now,
            expires_at=now + ttl,
        )
    )


async def token(conn: Reader | Tx, token_hash: str, kind: str, *, lock: bool) -> Any:
    """The token row of this kind (None), locked with ``lock``."""
    statement = sa.select(user_tokens).where(
        user_tokens.c.token_hash == token_hash, user_tokens.c.kind == kind
    )
    if lock:
        statement = statement.with_for_update()
    return (await conn.execute(statement)).first()


async def use_token(tx: Tx, token_pk: int) -> None:
    await tx.execute(
        sa.update(user_tokens).where(user_tokens.c.id == token_pk).values(used_at=utcnow())
    )
