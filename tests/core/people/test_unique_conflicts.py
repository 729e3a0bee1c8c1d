"""Two requests adding the same new person at once: the unique constraint decides, and the loser
is answered 409 by core on every surface (it was a 500 on Datadog, Make and Sumo Logic's org
contact, whose handlers did not catch the database's unique violation).

On SQLite writers take turns, so the second request sees the first's user and gets the 409 from
the check; on PostgreSQL both checks can pass and the insert itself collides.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from orgplane.api.dialects.sumologic import limits
from orgplane.models import orgs
from support.harness import Harness
from support.keys import dialect_key

ITERATIONS = 20


async def test_datadog_creates_of_the_same_new_user_never_500(h: Harness) -> None:
    """In one org the org row's lock serialises the two (201 and 409); in two orgs both may
    insert the same new identity, and the loser's unique violation is a 409."""
    root = h.root.org_id
    one = await dialect_key(h, root, "datadog")
    other = await dialect_key(h, (await h.create_org(root, "Other"))["id"], "datadog")
    for i in range(ITERATIONS):
        body = {"data": {"type": "users", "attributes": {"email": f"dup{i}@example.com"}}}
        answers = await asyncio.gather(
            *(
                h.client.post(
                    "/datadog/api/v2/users",
                    json=body,
                    headers={
                        "DD-API-KEY": key["api_key"],
                        "DD-APPLICATION-KEY": key["application_key"],
                    },
                )
                for key in ((one, one) if i % 2 else (one, other))
            )
        )
        codes = sorted(a.status_code for a in answers)
        expected = ([201, 409],) if i % 2 else ([201, 201], [201, 409])
        assert codes in expected, [a.text for a in answers]


async def test_two_orgs_created_with_the_same_new_contact_never_500(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sumo Logic's org contact and Make's owner: the person is new to both requests."""
    monkeypatch.setattr(limits, "RATE", "10000/second")  # Sumo Logic's 4 per second per key
    root = h.root.org_id
    response = await h.client.put(
        f"/orgs/{root}/limits/operations", json={"amount": 10_000_000}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    sumo = await dialect_key(h, root, "sumologic")
    make = (await dialect_key(h, root, "make"))["api_key"]
    async with h.services.db.read() as conn:
        root_key = (
            await conn.execute(sa.select(orgs.c.id).where(orgs.c.public_id == root))
        ).scalar_one()

    def sumo_org(name: str, email: str) -> Any:
        return h.client.post(
            "/sumologic/api/v1/organizations",
            json={
                "organizationName": name,
                "email": email,
                "firstName": "Con",
                "lastName": "Tact",
                "deploymentId": "us1",
            },
            auth=(sumo["access_id"], sumo["access_key"]),
            headers={"parentDeploymentId": "us1"},
        )

    def make_org(name: str, email: str) -> Any:
        return h.client.post(
            f"/make/api/v2/organizations/{root_key}/managed-organizations",
            json={
                "organizationName": name,
                "operations": 0,
                "regionId": 1,
                "countryId": 250,
                "userEmail": email,
                "userName": "Con Tact",
            },
            headers={"Authorization": f"Token {make}"},
        )

    for i in range(ITERATIONS):
        for surface, create in (("sumologic", sumo_org), ("make", make_org)):
            email = f"{surface}{i}@example.com"
            answers = await asyncio.gather(
                create(f"{surface} {i} a", email), create(f"{surface} {i} b", email)
            )
            codes = sorted(a.status_code for a in answers)
            assert codes in ([200, 200], [200, 409]), (surface, [a.text for a in answers])
