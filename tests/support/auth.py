"""Sign-in helpers: users written directly with SQLAlchemy (passwords hashed with cheap argon2
parameters, which keeps the suite fast), logins, and session bearer headers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher

from orgplane.core.ids import new_public_id
from orgplane.models import access_log, membership_roles, memberships, orgs, users
from orgplane.models.base import utcnow
from support.harness import Harness

PASSWORD = "correct horse battery staple"
WRONG = "not the right password"
UA = "auth-tests/1.0"
_cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


async def org_pk(h: Harness, public_id: str) -> Any:
    async with h.services.db.read() as conn:
        return (
            await conn.execute(
                sa.select(orgs.c.id, orgs.c.root_id).where(orgs.c.public_id == public_id)
            )
        ).one()


async def insert_user(
    h: Harness,
    email: str,
    roles: dict[str, list[str]],
    *,
    status: str = "active",
    password: str | None = PASSWORD,
    password_hash: str | None = None,
) -> int:
    """A user with memberships {org public id: [role keys]}, oldest first."""
    org_rows = [await org_pk(h, o) for o in roles]

    async def run(tx: Any) -> int:
        now = utcnow()
        user_pk = (
            await tx.execute(
                sa.insert(users)
                .values(
                    public_id=new_public_id("u"),
                    email=email,
                    email_normalized=email.lower(),
                    status=status,
                    password_hash=password_hash
                    or (_cheap.hash(password) if password is not None else None),
                    created_at=now,
                    modified_at=now,
                )
                .returning(users.c.id)
            )
        ).scalar_one()
        for i, (org, keys) in enumerate(zip(org_rows, roles.values(), strict=True)):
            await tx.execute(
                sa.insert(memberships).values(
                    user_id=user_pk,
                    org_id=org.id,
                    root_id=org.root_id,
                    created_at=now + timedelta(seconds=i),
                )
            )
            for key in keys:
                await tx.execute(
                    sa.insert(membership_roles).values(user_id=user_pk, org_id=org.id, role=key)
                )
        return int(user_pk)

    return await h.services.db.transaction(run)


async def sign_in(h: Harness, email: str, password: str, **extra: Any) -> Any:
    return await h.client.post(
        "/auth/login",
        json={"email": email, "password": password, **extra},
        headers={"User-Agent": UA},
    )


async def user_row(h: Harness, user_pk: int) -> Any:
    async with h.services.db.read() as conn:
        return (await conn.execute(sa.select(users).where(users.c.id == user_pk))).one()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def logged(h: Harness, action: str) -> list[Any]:
    """The access log's entries of ``action`` (``LOGIN``, ``LOGOUT``...), oldest first."""
    await h.services.access_log.flush()
    async with h.services.db.read() as conn:
        return list(
            (
                await conn.execute(
                    sa.select(access_log)
                    .where(access_log.c.action == action)
                    .order_by(access_log.c.id)
                )
            ).all()
        )
