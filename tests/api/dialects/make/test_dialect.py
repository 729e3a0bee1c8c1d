"""Make's MMS API (/make/api/v2), driven with requests shaped like Make's TypeScript SDK's.

The SDK sends ``Authorization: Token <uuid>`` for an API token, JSON bodies, and pagination as
``pg[offset]``/``pg[limit]``. Each call's effect is checked through the native API too: the org
Make created is a native child with the same quota in ``GET /orgs/{id}/credits``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from orgplane.core.bootstrap import create_root_with_admin_key
from support.harness import Harness
from support.make import BASE, SDK_HEADERS, make_error, make_key, org_key, token


async def set_operations(h: Harness, org: str, amount: int) -> None:
    response = await h.client.put(
        f"/orgs/{org}/limits/operations", json={"amount": amount}, headers=h.auth()
    )
    assert response.status_code == 200, response.text


async def native_operations(h: Harness, org: str) -> dict[str, Any]:
    response = await h.client.get(f"/orgs/{org}/credits", headers=h.auth())
    assert response.status_code == 200, response.text
    meters = {m["meter"]: m for m in response.json()["meters"]}
    return meters["operations"]


async def test_make_keys_are_native_credentials_in_another_format(h: Harness) -> None:
    secret = await make_key(h, h.root.org_id, ["*"])
    listed = await h.client.get(f"/orgs/{h.root.org_id}/api_keys", headers=h.auth())
    kinds = {k["hint"]: k["kind"] for k in listed.json()["data"]}
    assert kinds[secret[:8]] == "make"
    # Both schemes the SDK may use authenticate the same key.
    for scheme in ("Token", "Bearer"):
        me = await h.client.get("/me", headers={"Authorization": f"{scheme} {secret}"})
        assert me.status_code == 200, me.text
    native = await h.client.post(
        f"/orgs/{h.root.org_id}/api_keys", json={"name": "n", "scopes": ["*"]}, headers=h.auth()
    )
    assert native.status_code == 201 and "token" not in native.json()
    assert native.json()["api_key"].startswith("opk_")
    refused = await h.client.post(
        f"/orgs/{h.root.org_id}/api_keys",
        json={"name": "x", "scopes": ["*"], "kind": "nope"},
        headers=h.auth(),
    )
    assert refused.status_code == 400, refused.text
    assert "kind" in [e["field"] for e in refused.json()["errors"]]
    # Revoked like any key.
    key_id = next(k["id"] for k in listed.json()["data"] if k["hint"] == secret[:8])
    revoked = await h.client.delete(f"/orgs/{h.root.org_id}/api_keys/{key_id}", headers=h.auth())
    assert revoked.status_code == 204
    parent = await org_key(h, h.root.org_id)
    after = await h.client.get(
        f"{BASE}/organizations/{parent}/managed-organizations", headers=token(secret)
    )
    make_error(after, 401, "IM102")


async def test_managed_organizations_create_list_allocate_and_consume(h: Harness) -> None:
    await set_operations(h, h.root.org_id, 500_000)
    secret = await make_key(h, h.root.org_id, ["*"])
    parent = await org_key(h, h.root.org_id)

    empty = await h.client.get(
        f"{BASE}/organizations/{parent}/managed-organizations", headers=token(secret)
    )
    assert empty.status_code == 200, empty.text
    assert empty.json()["managedOrganizations"] == []

    created = await h.client.post(
        f"{BASE}/organizations/{parent}/managed-organizations",
        json={
            "organizationName": "Acme - Child Org",
            "operations": 10_000,
            "regionId": 1,
            "countryId": 250,
            "userEmail": "owner@client.example",
            "userName": "Jane",
        },
        headers=token(secret),
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["newParentOperations"] == 490_000
    child = body["childOrganizationId"]
    assert isinstance(child, int)
    assert body["userExisted"] == 0 and isinstance(body["userId"], int)
    assert body["userEmail"] == "owner@client.example" and body["userName"] == "Jane"
    assert body["domain"] == "orgplane.test"

    # The native API sees the same child with the same quota.
    children = await h.client.get(f"/orgs/{h.root.org_id}/children", headers=h.auth())
    native_child = next(c for c in children.json()["data"] if c["name"] == "Acme - Child Org")
    assert await org_key(h, native_child["id"]) == child
    assert (await native_operations(h, native_child["id"]))["limit"] == 10_000
    assert (await native_operations(h, h.root.org_id))["available"] == 490_000
    # regionId and countryId are stored: region 1 is the first deployment, 250 is France.
    native_org = (await h.client.get(f"/orgs/{native_child['id']}", headers=h.auth())).json()
    assert (native_org["deployment"], native_org["country"]) == ("au", "FR")
    # The named user is the child's owner (a new, pending user).
    owners = (await h.client.get(f"/orgs/{native_child['id']}/users", headers=h.auth())).json()
    assert [(u["email"], u["roles"], u["status"], u["first_name"]) for u in owners["data"]] == [
        ("owner@client.example", ["owner"], "pending", "Jane")
    ]

    second = await h.client.post(
        f"{BASE}/organizations/{parent}/managed-organizations",
        json={
            "organizationName": "Second",
            "operations": 20_000,
            "regionId": 3,
            "countryId": 4,
            "userEmail": "OWNER@client.example",
            "userName": "Jane Doe",
        },
        headers=token(secret),
    )
    assert second.status_code == 200, second.text
    # The same person again: an existing user, now owner of the second child too.
    assert second.json()["userExisted"] == 1
    assert second.json()["userId"] == body["userId"]
    assert second.json()["newParentOperations"] == 470_000

    listed = await h.client.get(
        f"{BASE}/organizations/{parent}/managed-organizations",
        params={"pg[offset]": 0, "pg[limit]": 10},
        headers=token(secret),
    )
    assert listed.status_code == 200, listed.text
    orgs_listed = listed.json()["managedOrganizations"]
    assert [(o["organizationId"], o["operationsAllocated"]) for o in orgs_listed] == [
        (child, 10_000),
        (second.json()["childOrganizationId"], 20_000),
    ]
    assert orgs_listed[0]["organizationName"] == "Acme - Child Org"
    assert listed.json()["pg"]["offset"] == 0 and listed.json()["pg"]["limit"] == 10
    paged = await h.client.get(
        f"{BASE}/organizations/{parent}/managed-organizations",
        params={"pg[offset]": 1, "pg[limit]": 1},
        headers=token(secret),
    )
    assert [o["organizationName"] for o in paged.json()["managedOrganizations"]] == ["Second"]

    raised = await h.client.patch(
        f"{BASE}/organizations/{parent}/managed-organizations/{child}",
        json={"operations": 20_000},
        headers=token(secret),
    )
    assert raised.status_code == 200, raised.text
    assert raised.json() == {
        "newParentOperations": 460_000,
        "newChildOperations": 20_000,
        "operationsDiff": 10_000,
        "limitIncreased": True,
    }
    assert (await native_operations(h, native_child["id"]))["limit"] == 20_000
    lowered = await h.client.patch(
        f"{BASE}/organizations/{parent}/managed-organizations/{child}",
        json={"operations": 0},
        headers=token(secret),
    )
    assert lowered.json() == {
        "newParentOperations": 480_000,
        "newChildOperations": 0,
        "operationsDiff": -20_000,
        "limitIncreased": False,
    }
    assert (await native_operations(h, h.root.org_id))["available"] == 480_000

    now = datetime.now(UTC).isoformat()
    events = [
        {"meter": meter, "quantity": quantity, "timestamp": now, "idempotency_key": meter}
        for meter, quantity in (("operations", 7), ("credits", 3), ("transfer", 512))
    ]
    ingested = await h.client.post(
        f"/orgs/{native_child['id']}/usage", json={"events": events}, headers=h.auth()
    )
    assert ingested.status_code == 200, ingested.text
    usage = await h.client.get(
        f"{BASE}/organizations/{parent}/managed-organizations-consumption", headers=token(secret)
    )
    assert usage.status_code == 200, usage.text
    rows = {r["organizationId"]: r for r in usage.json()["managedOrganizationsConsumption"]}
    assert set(rows) == {child, second.json()["childOrganizationId"]}
    # The child's limit is 0 now: everything it used is extra.
    used = {k: v for k, v in rows[child].items() if k not in ("organizationId", "lastReset")}
    assert used == {
        "centicreditsConsumed": "300",
        "centicreditsExtra": "0",
        "operationsConsumed": 7,
        "operationsExtra": 7,
        "transferConsumed": 512,
        "transferExtra": 0,
    }
    idle = rows[second.json()["childOrganizationId"]]
    assert idle["operationsConsumed"] == 0 and idle["centicreditsConsumed"] == "0"
    assert all(isinstance(r["lastReset"], str) for r in rows.values())


async def test_make_errors_have_makes_body(h: Harness) -> None:
    await set_operations(h, h.root.org_id, 100_000)
    parent = await org_key(h, h.root.org_id)
    url = f"{BASE}/organizations/{parent}/managed-organizations"
    secret = await make_key(h, h.root.org_id, ["*"])

    make_error(await h.client.get(url, headers=token(str(uuid.uuid4()))), 401, "IM102")
    make_error(await h.client.get(url, headers=token("not-a-token")), 401, "IM102")
    make_error(await h.client.get(url, headers=SDK_HEADERS), 401, "IM102")

    reader = await make_key(h, h.root.org_id, ["usage:read"])
    make_error(await h.client.get(url, headers=token(reader)), 403, "SC403")
    denied = await h.client.post(
        url,
        json={"organizationName": "X", "operations": 10_000, "regionId": 1, "countryId": 276},
        headers=token(reader),
    )
    make_error(denied, 403, "SC403")

    # Another tenant's org, and one that does not exist: not found alike.
    other = await h.services.db.transaction(create_root_with_admin_key, name="Other tenant")
    other_key = await org_key(h, other.org_id)
    other_secret = await make_key(h, other.org_id, ["*"], key=other.api_key)
    make_error(await h.client.get(url, headers=token(other_secret)), 404, "SC404")
    make_error(
        await h.client.get(
            f"{BASE}/organizations/{other_key}/managed-organizations", headers=token(secret)
        ),
        404,
        "SC404",
    )
    child_only = await h.create_org(h.root.org_id, "Child only")
    child_secret = await make_key(h, child_only["id"], ["*"])
    make_error(await h.client.get(url, headers=token(child_secret)), 404, "SC404")
    make_error(
        await h.client.get(
            f"{BASE}/organizations/999999999/managed-organizations", headers=token(secret)
        ),
        404,
        "SC404",
    )

    def create(body: dict[str, Any]) -> Any:
        return h.client.post(url, json=body, headers=token(secret))

    base = {"organizationName": "Bad", "regionId": 1, "countryId": 276}
    make_error(await create({**base, "operations": 15_000}), 400, "IM005")
    make_error(await create({"organizationName": "Bad", "operations": 10_000}), 400, "IM005")
    bad_region = make_error(await create({**base, "operations": 0, "regionId": 999}), 400, "IM005")
    assert "regionId" in bad_region["detail"]
    bad_country = make_error(await create({**base, "operations": 0, "countryId": 1}), 400, "IM005")
    assert "countryId" in bad_country["detail"]
    bad_owner = make_error(
        await create({**base, "operations": 10_000, "userEmail": "not an email"}), 400, "IM005"
    )
    assert "email" in bad_owner["detail"]
    bad_json = await h.client.post(url, content=b"{", headers=token(secret))
    make_error(bad_json, 400, "IM005")
    over = make_error(await create({**base, "operations": 200_000}), 409, "SC409")
    assert "available" in over["detail"]
    # Nothing was created by the refusals; the pool is untouched.
    listed = await h.client.get(url, headers=token(secret))
    names = [o["organizationName"] for o in listed.json()["managedOrganizations"]]
    assert "Bad" not in names
    assert (await native_operations(h, h.root.org_id))["available"] == 100_000

    child_key = await org_key(h, child_only["id"])
    make_error(
        await h.client.patch(f"{url}/{child_key}", json={"operations": 1}, headers=token(secret)),
        400,
        "IM005",
    )
