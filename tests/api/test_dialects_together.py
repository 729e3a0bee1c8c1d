"""One core, four surfaces: an org made through Make's API, given credits through Sumo Logic's,
read through Datadog's (with the official client) and the native API, is one org with one quota
and one owner everywhere."""

from __future__ import annotations

from typing import Any

from datadog_api_client.v1.api.organizations_api import OrganizationsApi as OrgsV1
from datadog_api_client.v2.api.organizations_api import OrganizationsApi as OrgsV2
from datadog_api_client.v2.api.users_api import UsersApi

from orgplane.core.ids import sumo_org_id
from support.datadog import datadog_key, dd
from support.harness import Harness, LiveServer
from support.make import BASE as MAKE
from support.make import make_key, org_key, token
from support.sumologic import HEADERS as SUMO_HEADERS
from support.sumologic import sdk


async def native(h: Harness, path: str) -> Any:
    response = await h.client.get(path, headers=h.auth())
    assert response.status_code == 200, response.text
    return response.json()


async def meters(h: Harness, org: str) -> dict[str, dict[str, Any]]:
    body = await native(h, f"/orgs/{org}/credits")
    return {m["meter"]: m for m in body["meters"]}


async def test_make_creates_sumo_allocates_datadog_and_native_read(
    h: Harness, live: LiveServer, relaxed: None
) -> None:
    root = h.root.org_id
    for meter, amount in (("operations", 100_000), ("credits", 50_000)):
        response = await h.client.put(
            f"/orgs/{root}/limits/{meter}", json={"amount": amount}, headers=h.auth()
        )
        assert response.status_code == 200, response.text

    # Make: a managed organization with 30,000 operations and a named owner.
    make = await make_key(h, root, ["*"])
    created = await h.client.post(
        f"{MAKE}/organizations/{await org_key(h, root)}/managed-organizations",
        json={
            "organizationName": "Shared Child",
            "operations": 30_000,
            "regionId": 1,
            "countryId": 250,
            "userEmail": "owner@shared.example",
            "userName": "Olive",
        },
        headers=token(make),
    )
    assert created.status_code == 200, created.text
    child_key = created.json()["childOrganizationId"]
    children = (await native(h, f"/orgs/{root}/children"))["data"]
    child = next(c for c in children if c["name"] == "Shared Child")
    assert await org_key(h, child["id"]) == child_key

    # Sumo Logic: the same org, by its Sumo id, gets 12,000 credits.
    sumo = await sdk(h, live, root, ["orgs:write", "credits:write", "users:read"])
    sumo_id = sumo_org_id(child["deployment"], child_key)
    found = (await live.call(sumo.get, f"/organizations/{sumo_id}", headers=SUMO_HEADERS)).json()
    assert found["organizationName"] == "Shared Child"
    assert found["deploymentId"] == child["deployment"]
    body = {"totalCreditsAllocated": 12_000}
    updated = (
        await live.call(sumo.put, f"/organizations/{sumo_id}", body, headers=SUMO_HEADERS)
    ).json()
    assert updated["subscription"]["allocatedCredits"] == 12_000

    # Native: one org, both quotas, the parent's pools reduced by both dialects.
    child_meters = await meters(h, child["id"])
    assert child_meters["operations"]["limit"] == 30_000
    assert child_meters["credits"]["limit"] == 12_000
    root_meters = await meters(h, root)
    assert root_meters["operations"]["available"] == 70_000
    assert root_meters["credits"]["available"] == 38_000
    native_child = await native(h, f"/orgs/{child['id']}")
    assert (native_child["name"], native_child["country"]) == ("Shared Child", "FR")
    owners = (await native(h, f"/orgs/{child['id']}/users"))["data"]
    assert [(u["email"], u["roles"]) for u in owners] == [("owner@shared.example", ["owner"])]

    # Make sees Sumo's credits in its consumption view and its own operations in the list.
    listed = await h.client.get(
        f"{MAKE}/organizations/{await org_key(h, root)}/managed-organizations",
        headers=token(make),
    )
    assert [
        (o["organizationId"], o["operationsAllocated"])
        for o in listed.json()["managedOrganizations"]
    ] == [(child_key, 30_000)]

    # Datadog, with its own client: the same org by public id (v1) and by UUID (v2) ...
    with dd(live, await datadog_key(h, root, ["orgs:read", "users:read"])) as client:
        v1 = await live.call(OrgsV1(client).get_org, child["id"])
        assert v1.org.name == "Shared Child" and v1.org.public_id == child["id"]
        managed = await live.call(OrgsV2(client).list_orgs, filter_name="Shared Child")
        assert [str(o.id) for o in managed.data.relationships.managed_orgs.data] == [
            native_child["uuid"]
        ]
    # ... and, through a key of the child, the owner Make named.
    with dd(live, await datadog_key(h, child["id"], ["users:read"])) as client:
        users = await live.call(UsersApi(client).list_users)
        assert [u.attributes.email for u in users.data] == ["owner@shared.example"]

    # Every change, whichever surface made it, is in the one audit trail.
    audit = (await native(h, f"/orgs/{child['id']}/audit?limit=100"))["data"]
    actions = {entry["action"] for entry in audit}
    assert {"org.created", "credits.allocated", "user.created"} <= actions, actions
