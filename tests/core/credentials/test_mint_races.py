"""A key bound to a member, minted while that member is removed, on both databases.

Removing a member revokes the org's keys bound to them (or hands them to ``transfer_to``). A
mint that checked the membership before the removal committed, and wrote after it, would leave
a live key acting as someone who is no longer a member. ``credentials.mint`` reads the org with
a share lock, which the removal's lock on the org row waits for (or makes the mint wait): one of
the two comes first, every time.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from orgplane.models import credentials, memberships, orgs, users
from support.harness import Harness
from support.people import make_user

ROUNDS = 12


async def test_a_key_minted_for_a_member_being_removed(h: Harness) -> None:
    org = (await h.create_org(h.root.org_id, "Org"))["id"]
    # An administrator stays, so each member may always be removed.
    await make_user(h, org, "admin@example.com", ["administrator"])
    for i in range(ROUNDS):
        member = await make_user(h, org, f"member{i}@example.com", ["standard"])
        minted, removed = await asyncio.gather(
            h.client.post(
                f"/orgs/{org}/api_keys",
                json={"name": f"k{i}", "scopes": ["orgs:read"], "user_id": member},
                headers=h.auth(),
            ),
            h.client.delete(f"/orgs/{org}/users/{member}", headers=h.auth()),
        )
        assert removed.status_code == 204, removed.text
        # The mint either came first (and its key was revoked with the membership) or found the
        # member gone (400 naming user_id).
        assert minted.status_code in (201, 400), minted.text
        async with h.services.db.read() as conn:
            live = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(
                        credentials.join(users, users.c.id == credentials.c.user_id).join(
                            orgs, orgs.c.id == credentials.c.org_id
                        )
                    )
                    .where(
                        users.c.public_id == member,
                        orgs.c.public_id == org,
                        credentials.c.revoked_at.is_(None),
                    )
                )
            ).scalar_one()
            still_member = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(
                        memberships.join(users, users.c.id == memberships.c.user_id).join(
                            orgs, orgs.c.id == memberships.c.org_id
                        )
                    )
                    .where(users.c.public_id == member, orgs.c.public_id == org)
                )
            ).scalar_one()
        assert still_member == 0
        assert live == 0, f"round {i}: a live key acts as a removed member"
