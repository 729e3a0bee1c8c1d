"""Members made through the native API: invitations accepted, user-bound keys, and the audit
actions taken on a target.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from orgplane.models import audit_log
from support.harness import Harness

PASSWORD = "correct horse battery staple"


async def actions(h: Harness, target_id: str) -> list[str]:
    async with h.services.db.read() as conn:
        rows = await conn.execute(
            sa.select(audit_log.c.action)
            .where(audit_log.c.target_id == target_id)
            .order_by(audit_log.c.id)
        )
        return [r.action for r in rows]


async def invite(h: Harness, org: str, email: str, roles: list[str], key: str | None = None) -> Any:
    response = await h.client.post(
        f"/orgs/{org}/invitations", json={"email": email, "roles": roles}, headers=h.auth(key)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def make_user(h: Harness, org: str, email: str, roles: list[str]) -> str:
    """An active member of ``org`` with ``roles`` (invited, then accepted); their id."""
    invitation = await invite(h, org, email, roles)
    response = await h.client.post(
        f"/invitations/{invitation['token']}/accept", json={"password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    user_id: str = response.json()["user_id"]
    return user_id


async def user_key(h: Harness, org: str, user_id: str, scopes: list[str] | None = None) -> str:
    """An API key of ``org`` that acts as ``user_id``."""
    return await h.create_key(org, scopes or ["*"], user_id=user_id)
