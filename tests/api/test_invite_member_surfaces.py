"""``people.invite_member`` through every surface that adds a member: the audit entries it
writes are the same whichever surface called it, apart from the actor and request metadata.

Each surface adds a new person (so ``user.created``) to an org of its own; the same person added
natively with the same roles is the reference. Emails and expiry times differ by construction
and are blanked before comparing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from orgplane.models import audit_log
from support.harness import Harness
from support.keys import dialect_key
from support.make import org_key

ENTRY = tuple[str, str, Any, Any]


def _blank(value: Any, email: str) -> Any:
    if isinstance(value, dict):
        return {k: "<expiry>" if k == "expires_at" else _blank(v, email) for k, v in value.items()}
    if isinstance(value, str) and value.lower() == email.lower():
        return "<email>"
    return value


async def _entries(h: Harness, email: str) -> list[ENTRY]:
    """The user and invitation entries about the person with this email, oldest first."""
    async with h.services.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(audit_log.c.action, audit_log.c.target_type, audit_log.c.before)
                .add_columns(audit_log.c.after)
                .where(audit_log.c.target_type.in_(["user", "invitation"]))
                .order_by(audit_log.c.id)
            )
        ).all()
    out = []
    for row in rows:
        after = row.after or {}
        if str(after.get("email", "")).lower() != email.lower():
            continue
        out.append((row.action, row.target_type, _blank(row.before, email), _blank(after, email)))
    return out


async def _native(
    h: Harness, org: str, email: str, roles: list[str], name: tuple[str, str]
) -> None:
    response = await h.client.post(
        f"/orgs/{org}/users",
        json={"email": email, "first_name": name[0], "last_name": name[1], "roles": roles},
        headers=h.auth(),
    )
    assert response.status_code == 201, response.text


async def test_invite_member_writes_the_same_audit_entries_through_every_surface(
    h: Harness,
) -> None:
    root = h.root.org_id
    response = await h.client.put(
        f"/orgs/{root}/limits/operations", json={"amount": 100_000}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    name = ("Ada", "Lovelace")

    async def scim(org: str, email: str) -> None:
        secret = await h.create_key(org, ["*"])
        response = await h.client.post(
            "/scim/v2/Users",
            json={
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": email,
                "name": {"givenName": name[0], "familyName": name[1]},
            },
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/scim+json"},
        )
        assert response.status_code == 201, response.text

    async def sumo_user(org: str, email: str) -> None:
        key = await dialect_key(h, org, "sumologic")
        response = await h.client.post(
            "/sumologic/api/v1/users",
            json={"firstName": name[0], "lastName": name[1], "email": email, "roleIds": []},
            auth=(key["access_id"], key["access_key"]),
        )
        assert response.status_code == 200, response.text

    async def datadog_user(org: str, email: str) -> None:
        key = await dialect_key(h, org, "datadog")
        response = await h.client.post(
            "/datadog/api/v2/users",
            json={
                "data": {"type": "users", "attributes": {"email": email, "name": "Ada Lovelace"}}
            },
            headers={"DD-API-KEY": key["api_key"], "DD-APPLICATION-KEY": key["application_key"]},
        )
        assert response.status_code == 201, response.text

    async def sumo_org_contact(org: str, email: str) -> None:
        key = await dialect_key(h, org, "sumologic")
        response = await h.client.post(
            "/sumologic/api/v1/organizations",
            json={
                "organizationName": f"Sumo {email.split('@')[0]}",
                "email": email,
                "firstName": name[0],
                "lastName": name[1],
                "deploymentId": "us1",
            },
            auth=(key["access_id"], key["access_key"]),
            headers={"parentDeploymentId": "us1"},
        )
        assert response.status_code == 200, response.text

    async def make_owner(org: str, email: str) -> None:
        response = await h.client.put(
            f"/orgs/{root}/children/{org}/allocations/operations",
            json={"amount": 10_000},
            headers=h.auth(),
        )
        assert response.status_code == 200, response.text
        secret = (await dialect_key(h, org, "make"))["api_key"]
        response = await h.client.post(
            f"/make/api/v2/organizations/{await org_key(h, org)}/managed-organizations",
            json={
                "organizationName": f"Make {email.split('@')[0]}",
                "operations": 0,
                "regionId": 1,
                "countryId": 250,
                "userEmail": email,
                "userName": "Ada Lovelace",
            },
            headers={"Authorization": f"Token {secret}"},
        )
        assert response.status_code == 200, response.text

    # surface → (how it adds the member, the roles it gives them)
    surfaces: dict[str, tuple[Callable[[str, str], Awaitable[None]], list[str]]] = {
        "scim": (scim, []),
        "sumologic users": (sumo_user, []),
        "datadog users": (datadog_user, []),
        "sumologic organization contact": (sumo_org_contact, ["administrator"]),
        "make managed owner": (make_owner, ["owner"]),
    }
    for i, (surface, (add, roles)) in enumerate(surfaces.items()):
        org = (await h.create_org(root, f"Org {i}"))["id"]
        reference_org = (await h.create_org(root, f"Reference {i}"))["id"]
        email, reference = f"s{i}@example.com", f"r{i}@example.com"
        await add(org, email)
        await _native(h, reference_org, reference, roles, name)
        got, expected = await _entries(h, email), await _entries(h, reference)
        if surface == "datadog users":
            # Datadog creates the user, then invites with POST /api/v2/user_invitations.
            expected = [e for e in expected if e[1] != "invitation"]
        assert got == expected, surface
        assert got[0][0] == "user.created"
