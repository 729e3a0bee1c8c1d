"""People's write paths under concurrency: two conflicting requests sent together, many times.

SQLite runs one writer at a time (``BEGIN IMMEDIATE``), so these races only show on PostgreSQL
(READ COMMITTED), where a check made on rows read before the lock that keeps it true is a race.
After each pair the invariant is checked on the database itself:
- an org never ends without a non-disabled owner or administrator (disable x disable and
  disable x remove across orgs: a user's identity spans orgs, the request locks only one);
- an invitation is never both accepted and revoked, and a user disabled by a 200 stays so;
- a key handed to ``transfer_to`` never ends bound to a user who is not a member of its org.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from orgplane.models import credentials, invitations, membership_roles, memberships, users
from support.harness import Harness

ITERATIONS = 30
PASSWORD = "correct horse battery staple"


async def _add(h: Harness, org: str, email: str, roles: list[str]) -> dict[str, Any]:
    response = await h.client.post(
        f"/orgs/{org}/users", json={"email": email, "roles": roles}, headers=h.auth()
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _guardians(h: Harness, org_public_id: str) -> int:
    """Non-disabled owners or administrators of the org."""
    async with h.services.db.read() as conn:
        count: int = (
            await conn.execute(
                sa.text(
                    "SELECT count(DISTINCT mr.user_id) FROM membership_roles mr "
                    "JOIN users u ON u.id = mr.user_id JOIN orgs o ON o.id = mr.org_id "
                    "WHERE o.public_id = :org AND mr.role IN ('owner', 'administrator') "
                    "AND u.status != 'disabled'"
                ),
                {"org": org_public_id},
            )
        ).scalar_one()
    return count


async def test_an_org_never_loses_its_last_guardian_across_orgs(h: Harness) -> None:
    """U administers C and is a member of the root; V administers C only. Disabling U through
    the root (which locks the root's row) races disabling or removing V through C (which locks
    C's): each sees the other still guarding C."""
    root = h.root.org_id
    outcomes: list[tuple[int, int]] = []
    for i in range(ITERATIONS):
        child = (await h.create_org(root, f"C{i}"))["id"]
        u = (await _add(h, child, f"u{i}@example.com", ["administrator"]))["id"]
        v = (await _add(h, child, f"v{i}@example.com", ["administrator"]))["id"]
        await _add(h, root, f"u{i}@example.com", ["standard"])
        second = (
            h.client.post(f"/orgs/{child}/users/{v}/disable", headers=h.auth())
            if i % 2 == 0
            else h.client.delete(f"/orgs/{child}/users/{v}", headers=h.auth())
        )
        first, other = await asyncio.gather(
            h.client.post(f"/orgs/{root}/users/{u}/disable", headers=h.auth()), second
        )
        assert first.status_code in (200, 409), first.text
        assert other.status_code in (200, 204, 409), other.text
        outcomes.append((first.status_code, other.status_code))
        assert await _guardians(h, child) >= 1, (i, first.text, other.text)
    # Exactly one of each pair won: the later one saw the first and refused.
    assert all(sorted((a < 300, b < 300)) == [False, True] for a, b in outcomes), outcomes


async def test_accepting_an_invitation_races_revoking_it_and_disabling_the_user(
    h: Harness,
) -> None:
    """A person with a password, invited to a new org each time, accepts (no password to hash,
    so the accept's transaction starts at once) while the invitation is revoked or the user is
    disabled."""
    root = h.root.org_id
    response = await h.client.post(
        f"/orgs/{root}/invitations",
        json={"email": "person@example.com", "roles": ["standard"]},
        headers=h.auth(),
    )
    token, user_id = response.json()["token"], response.json()["user_id"]
    response = await h.client.post(f"/invitations/{token}/accept", json={"password": PASSWORD})
    assert response.status_code == 200, response.text
    for i in range(ITERATIONS):
        child = (await h.create_org(root, f"I{i}"))["id"]
        response = await h.client.post(
            f"/orgs/{child}/invitations",
            json={"email": "person@example.com", "roles": ["standard"]},
            headers=h.auth(),
        )
        assert response.status_code == 201, response.text
        invitation = response.json()
        accept = h.client.post(f"/invitations/{invitation['token']}/accept", json={})
        revoking = i % 2 == 0
        if revoking:
            other = h.client.delete(
                f"/orgs/{child}/invitations/{invitation['id']}", headers=h.auth()
            )
        else:
            other = h.client.post(f"/orgs/{child}/users/{user_id}/disable", headers=h.auth())
        accepted, changed = await asyncio.gather(accept, other)
        assert accepted.status_code in (200, 409, 410), accepted.text
        assert changed.status_code in (200, 204, 409), changed.text
        async with h.services.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(invitations.c.accepted_at, invitations.c.revoked_at).where(
                        invitations.c.public_id == invitation["id"]
                    )
                )
            ).one()
            status = (
                await conn.execute(sa.select(users.c.status).where(users.c.public_id == user_id))
            ).scalar_one()
        context = (i, accepted.text, changed.text)
        if revoking:
            assert not (row.accepted_at and row.revoked_at), context
            assert (accepted.status_code == 200) != (changed.status_code == 204), context
        else:
            assert changed.status_code == 200, context
            assert status == "disabled", context
            response = await h.client.post(f"/orgs/{root}/users/{user_id}/enable", headers=h.auth())
            assert response.status_code == 200, response.text


async def test_a_key_is_never_handed_to_a_user_removed_meanwhile(h: Harness) -> None:
    """Removing A with ``transfer_to=B`` races removing B: B's removal must not leave B holding
    A's key in an org B is no longer a member of."""
    root = h.root.org_id
    for i in range(ITERATIONS):
        child = (await h.create_org(root, f"T{i}"))["id"]
        await _add(h, child, f"owner{i}@example.com", ["owner"])
        a = (await _add(h, child, f"a{i}@example.com", ["standard"]))["id"]
        b = (await _add(h, child, f"b{i}@example.com", ["standard"]))["id"]
        await h.create_key(child, ["orgs:read"], user_id=a)
        removed_a, removed_b = await asyncio.gather(
            h.client.delete(
                f"/orgs/{child}/users/{a}", params={"transfer_to": b}, headers=h.auth()
            ),
            h.client.delete(f"/orgs/{child}/users/{b}", headers=h.auth()),
        )
        assert removed_a.status_code in (204, 400), removed_a.text
        assert removed_b.status_code == 204, removed_b.text
        async with h.services.db.read() as conn:
            stranded = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(credentials)
                    .where(
                        credentials.c.revoked_at.is_(None),
                        credentials.c.user_id.is_not(None),
                        ~sa.exists().where(
                            memberships.c.user_id == credentials.c.user_id,
                            memberships.c.org_id == credentials.c.org_id,
                        ),
                    )
                )
            ).scalar_one()
            roles_left = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(membership_roles)
                    .where(
                        ~sa.exists().where(
                            memberships.c.user_id == membership_roles.c.user_id,
                            memberships.c.org_id == membership_roles.c.org_id,
                        )
                    )
                )
            ).scalar_one()
        assert stranded == 0, (i, removed_a.text, removed_b.text)
        assert roles_left == 0


async def test_two_role_changes_in_one_org_keep_a_guardian(h: Harness) -> None:
    """Taking the administrator role from U and from V of the same org at once: both requests
    lock that org's row first, so the second sees the first."""
    root = h.root.org_id
    for i in range(ITERATIONS):
        child = (await h.create_org(root, f"R{i}"))["id"]
        u = (await _add(h, child, f"ru{i}@example.com", ["administrator"]))["id"]
        v = (await _add(h, child, f"rv{i}@example.com", ["administrator"]))["id"]
        first, second = await asyncio.gather(
            h.client.delete(f"/orgs/{child}/roles/administrator/users/{u}", headers=h.auth()),
            h.client.patch(f"/orgs/{child}/users/{v}", json={"roles": []}, headers=h.auth()),
        )
        assert {first.status_code, second.status_code} in ({204, 409}, {200, 409}), (
            first.text,
            second.text,
        )
        assert await _guardians(h, child) == 1
