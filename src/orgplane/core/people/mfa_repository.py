"""The SQL of the second factor: a user's TOTP columns, recovery codes, the org switch, and
sessions restricted to enrolment. The rules are ``mfa``'s and (at sign-in) ``auth``'s."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orgplane.core.people.auth_repository import set_user_columns
from orgplane.db.engine import Reader, Tx
from orgplane.models import mfa_recovery_codes, orgs, user_tokens, users
from orgplane.models.base import utcnow

# A session's ``data`` while its org requires a second factor its user has not enrolled yet.
ENROLMENT_ONLY = {"mfa_enrolment_required": True}


def ancestry(path: str) -> list[int]:
    """The ids of the org at ``path`` ("/1/5/9/") and of its ancestors."""
    return [int(part) for part in path.strip("/").split("/")]


async def required_in(conn: Reader | Tx, path: str) -> bool:
    """Whether the org at ``path`` or one of its ancestors requires a second factor."""
    found = await conn.execute(
        sa.select(orgs.c.id).where(orgs.c.id.in_(ancestry(path)), orgs.c.mfa_required).limit(1)
    )
    return found.first() is not None


async def required_for_org(conn: Reader | Tx, org_pk: int) -> bool:
    """``required_in`` for the org with this id."""
    path = (await conn.execute(sa.select(orgs.c.path).where(orgs.c.id == org_pk))).scalar_one()
    return await required_in(conn, path)


async def totp(conn: Reader, user_pk: int) -> Any:
    """The user's TOTP state (no lock: for reads)."""
    return (
        await conn.execute(
            sa.select(users.c.totp_secret, users.c.totp_confirmed_at).where(users.c.id == user_pk)
        )
    ).one()


async def clear(tx: Tx, user_pk: int, by: str) -> None:
    """No second factor any more: seed, confirmation, last step and recovery codes go."""
    await set_user_columns(
        tx,
        user_pk,
        {"totp_secret": None, "totp_confirmed_at": None, "totp_last_step": None, "modified_by": by},
        new_version=True,
    )
    await tx.execute(sa.delete(mfa_recovery_codes).where(mfa_recovery_codes.c.user_id == user_pk))


async def replace_recovery_codes(tx: Tx, user_pk: int, code_hashes: list[str]) -> None:
    """These codes, and no other, are the user's recovery codes now."""
    await tx.execute(sa.delete(mfa_recovery_codes).where(mfa_recovery_codes.c.user_id == user_pk))
    now = utcnow()
    await tx.execute(
        sa.insert(mfa_recovery_codes),
        [{"user_id": user_pk, "code_hash": h, "created_at": now} for h in code_hashes],
    )


async def use_recovery_code(tx: Tx, user_pk: int, code_hash: str, now: datetime) -> bool:
    """Use up the unused recovery code with this hash (False: no such unused code)."""
    used = await tx.execute(
        sa.update(mfa_recovery_codes)
        .where(
            mfa_recovery_codes.c.user_id == user_pk,
            mfa_recovery_codes.c.code_hash == code_hash,
            mfa_recovery_codes.c.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return bool(used.rowcount == 1)


async def recovery_codes_left(conn: Reader | Tx, user_pk: int) -> int:
    count: int = (
        await conn.execute(
            sa.select(sa.func.count())
            .select_from(mfa_recovery_codes)
            .where(mfa_recovery_codes.c.user_id == user_pk, mfa_recovery_codes.c.used_at.is_(None))
        )
    ).scalar_one()
    return count


async def lift_enrolment_restriction(tx: Tx, session_pk: int) -> None:
    """The session may do everything its user may again."""
    await tx.execute(
        sa.update(user_tokens)
        .where(user_tokens.c.id == session_pk, user_tokens.c.kind == "session")
        .values(data=sa.null())
    )
