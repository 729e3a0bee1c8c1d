"""Sumo Logic's Organizations Management API (/sumologic/api/v1/organizations...), driven with
the real sumologic-sdk 0.2.1's generic ``get``/``post``/``put``/``delete`` (it has no helpers
for organizations), with the global assembly's ``parentDeploymentId`` header. Each effect is
checked through the native API: the same org, the same credits in GET /orgs/{id}/credits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from orgplane.core.ids import sumo_org_id
from orgplane.models import orgs
from support.harness import Harness, LiveServer
from support.sumologic import BASE, HEADERS, basic, raises, sdk, sumo_error, sumo_key


async def native_credits(h: Harness, org: str) -> dict[str, Any]:
    response = await h.client.get(f"/orgs/{org}/credits", headers=h.auth())
    assert response.status_code == 200, response.text
    meters: dict[str, Any] = {m["meter"]: m for m in response.json()["meters"]}
    return meters["credits"]


async def public_id(h: Harness, sumo_id: str) -> str:
    key = int(sumo_id.split("-")[1], 16)
    async with h.services.db.read() as conn:
        value = (await conn.execute(sa.select(orgs.c.public_id).where(orgs.c.id == key))).scalar()
    assert isinstance(value, str)
    return value


async def setup_credits(h: Harness, amount: int, charge_pct: float | None = None) -> None:
    response = await h.client.put(
        f"/orgs/{h.root.org_id}/limits/credits", json={"amount": amount}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    if charge_pct is not None:
        response = await h.client.patch(
            "/meters/credits", json={"deployment_charge_pct": charge_pct}, headers=h.auth()
        )
        assert response.status_code == 200, response.text


async def ingest(h: Harness, org: str, quantity: int, key: str) -> None:
    event = {
        "meter": "credits",
        "quantity": quantity,
        "timestamp": datetime.now(UTC).isoformat(),
        "idempotency_key": key,
    }
    response = await h.client.post(f"/orgs/{org}/usage", json={"events": [event]}, headers=h.auth())
    assert response.status_code in (200, 201, 202), response.text


def new_org(name: str, deployment: str, credits: int, **extra: Any) -> dict[str, Any]:
    return {
        "organizationName": name,
        "email": f"{name.lower()}@example.com",
        "firstName": "Owner",
        "lastName": name,
        "deploymentId": deployment,
        "baselines": {"continuousIngest": 5, "metrics": 5000, "totalCreditsAllocated": credits},
        **extra,
    }


async def test_child_organizations_and_their_credits(
    h: Harness, live: LiveServer, relaxed: None
) -> None:
    await setup_credits(h, 100_000, charge_pct=10)
    sumo = await sdk(
        h, live, h.root.org_id, ["orgs:write", "credits:write", "keys:write", "users:read"]
    )
    hdr = {"headers": HEADERS}

    deployments = (await live.call(sumo.get, "/deployments", **hdr)).json()
    assert {d["deploymentId"] for d in deployments} >= {"us1", "us2", "eu", "au"}
    assert deployments[0]["apiUrl"].endswith("/sumologic/api")

    # Same deployment: no charge. Another deployment: the 10 % charge is paid by the parent.
    same = await live.call(sumo.post, "/organizations", new_org("Near", "us1", 20_000), **hdr)
    near = same.json()
    assert near["subscription"]["allocatedCredits"] == 20_000
    assert near["subscription"]["deploymentChargeCredits"] == 0
    assert near["subscription"]["baselines"]["metrics"] == 5000
    assert near["email"] == "near@example.com" and near["deploymentId"] == "us1"
    far = (await live.call(sumo.post, "/organizations", new_org("Far", "eu", 30_000), **hdr)).json()
    assert far["orgId"].startswith("eu-") and len(far["orgId"]) == 19
    assert far["subscription"]["deploymentChargeCredits"] == 3_000
    assert far["subscription"]["credits"] == 33_000
    near_id, far_id = await public_id(h, near["orgId"]), await public_id(h, far["orgId"])
    assert near["orgId"] == sumo_org_id("us1", int(near["orgId"][4:], 16))
    native = (await h.client.get(f"/orgs/{far_id}", headers=h.auth())).json()
    assert (native["name"], native["deployment"], native["parent_id"]) == (
        "Far",
        "eu",
        h.root.org_id,
    )
    assert (await native_credits(h, far_id))["limit"] == 30_000
    assert (await native_credits(h, far_id))["deployment_charge"] == 3_000
    assert (await native_credits(h, h.root.org_id))["available"] == 100_000 - 20_000 - 33_000
    owners = (await h.client.get(f"/orgs/{far_id}/users", headers=h.auth())).json()["data"]
    assert [(u["email"], u["roles"]) for u in owners] == [("far@example.com", ["administrator"])]

    listed = (await live.call(sumo.get, "/organizations", {"limit": 1}, **hdr)).json()
    assert [o["orgId"] for o in listed["data"]] == [near["orgId"]] and listed["next"]
    rest = (await live.call(sumo.get, "/organizations", {"token": listed["next"]}, **hdr)).json()
    assert [o["orgId"] for o in rest["data"]] == [far["orgId"]]
    assert (await live.call(sumo.get, f"/organizations/{far['orgId']}", **hdr)).json() == far

    # Update the allocation; below consumption is refused by the core.
    body = {"continuousIngest": 7, "totalCreditsAllocated": 40_000}
    updated = (await live.call(sumo.put, f"/organizations/{far['orgId']}", body, **hdr)).json()
    assert updated["subscription"]["allocatedCredits"] == 40_000
    assert updated["subscription"]["baselines"]["continuousIngest"] == 7
    assert (await native_credits(h, far_id))["limit"] == 40_000
    assert (await native_credits(h, h.root.org_id))["available"] == 100_000 - 20_000 - 44_000
    await ingest(h, near_id, 15_000, "near-1")
    reason = await raises(
        live, 409, sumo.put, f"/organizations/{near['orgId']}", {"totalCreditsAllocated": 10}, **hdr
    )
    assert "15000 consumed" in reason
    assert (await native_credits(h, near_id))["limit"] == 20_000

    # Usages: the parent's, one org's, several orgs', the paid children's allocation.
    parent = (await live.call(sumo.get, "/organizations/usages", **hdr)).json()
    assert parent == {"totalCapacity": 100_000, "totalCreditsUsed": 0, "creditsAllocated": 64_000}
    usage = (await live.call(sumo.get, f"/organizations/usages/{near['orgId']}", **hdr)).json()
    assert (usage["totalCapacity"], usage["totalCreditsUsed"]) == (20_000, 15_000)
    several = (
        await live.call(sumo.post, "/organizations/usages", [near["orgId"], far["orgId"]], **hdr)
    ).json()
    assert [(u["orgId"], u["totalCreditsUsed"]) for u in several["data"]] == [
        (near["orgId"], 15_000),
        (far["orgId"], 0),
    ]
    allocated = (await live.call(sumo.get, "/organizations/allocatedCredits", **hdr)).json()
    assert allocated == {"creditsAllocated": 0.0}  # both children are on the root's free plan
    info = (await live.call(sumo.get, "/organizations/parentOrg", **hdr)).json()
    assert info["isEligibleForDeploymentCharge"] is True and info["planName"] == "Free"
    assert {"deploymentId": "eu", "deploymentCharge": 10.0} in info["deploymentCharges"]

    # An access key of the child: a real sumologic credential that works at once.
    key = (
        await live.call(
            sumo.post,
            f"/organizations/{near['orgId']}/accessKey",
            {"label": "child key", "scopes": ["users:read"]},
            **hdr,
        )
    ).json()
    assert key["id"].startswith("su") and len(key["key"]) == 64 and key["scopes"] == ["users:read"]
    listed_keys = (await h.client.get(f"/orgs/{near_id}/api_keys", headers=h.auth())).json()
    assert [(k["name"], k["kind"]) for k in listed_keys["data"]] == [("child key", "sumologic")]
    child_users = await h.client.get(f"{BASE}/v1/users", auth=basic(key["id"], key["key"]))
    assert [u["email"] for u in child_users.json()["data"]] == ["near@example.com"]

    login = await live.call(sumo.get, f"/organizations/{near['orgId']}/subdomainLoginUrl", **hdr)
    assert login.json()["subdomainLoginUrl"].endswith("/console")
    prov = await live.call(sumo.get, f"/organizations/provisioning/{near['orgId']}", **hdr)
    assert prov.json() == {"cse": {"isProvisioned": False, "isProvisioningToggleAllowed": False}}

    # Deactivate: unused credits go back to the parent; delink is not supported.
    gone = (await live.call(sumo.delete, f"/organizations/{far['orgId']}", **hdr)).json()
    assert gone["subscription"]["status"] == "Canceled"
    assert (await h.client.get(f"/orgs/{far_id}", headers=h.auth())).json()["status"] == (
        "deactivated"
    )
    assert (await native_credits(h, h.root.org_id))["available"] == 100_000 - 20_000
    inactive = (await live.call(sumo.get, "/organizations", {"status": "Inactive"}, **hdr)).json()
    assert [o["orgId"] for o in inactive["data"]] == [far["orgId"]]
    reason = await raises(
        live, 501, sumo.put, "/organizations/delink", {"orgIds": [far["orgId"]]}, **hdr
    )
    assert "not_implemented_yet" in reason
    assert (await h.client.get(f"/orgs/{far_id}", headers=h.auth())).json()["parent_id"] == (
        h.root.org_id
    )


async def test_regional_child_usages(h: Harness, live: LiveServer, relaxed: None) -> None:
    await setup_credits(h, 50_000)
    sumo = await sdk(h, live, h.root.org_id, ["orgs:write", "credits:write", "usage:read"])
    child = (
        await live.call(
            sumo.post, "/organizations", new_org("Tenant", "us1", 10_000), headers=HEADERS
        )
    ).json()
    await ingest(h, await public_id(h, child["orgId"]), 2_500, "t-1")
    month = datetime.now(UTC).strftime("%Y-%m")
    body = {"startDate": f"{month}-01", "endDate": f"{month}-02"}
    # Without parentDeploymentId this is the regional orgsManagement operation.
    report = (await live.call(sumo.post, "/organizations/usages", body)).json()
    [entry] = report["data"]
    assert (entry["orgId"], entry["orgName"], entry["status"]) == (
        child["orgId"],
        "Tenant",
        "Active",
    )
    assert entry["allocatedCredits"] == 10_000
    assert entry["usages"]["totalCreditsUsed"] == 2_500
    assert entry["usages"]["usagePercentage"] == 25.0
    assert entry["usages"]["forecastPercentage"] >= 25.0
    assert (await live.call(sumo.post, "/organizations/usages", None)).json() == report
    reason = await raises(
        live,
        400,
        sumo.post,
        "/organizations/usages",
        {"startDate": "2025-01-01", "endDate": "2025-03-01"},
    )
    assert "endDate" in reason


async def test_organization_errors(h: Harness, live: LiveServer, relaxed: None) -> None:
    await setup_credits(h, 10_000)
    reader_id, reader_key = await sumo_key(h, h.root.org_id, ["orgs:read"])
    reader = basic(reader_id, reader_key)
    url = f"{BASE}/v1/organizations"

    sumo_error(await h.client.get(url, headers=HEADERS), 401, "unauthorized")
    # 400: the header is required and must be the caller's deployment; bad ids and bodies.
    error = sumo_error(await h.client.get(url, auth=reader), 400, "bad.request")
    assert error["errors"][0]["meta"]["field"] == "header.parentDeploymentId"
    sumo_error(
        await h.client.get(url, auth=reader, headers={"parentDeploymentId": "eu"}),
        400,
        "bad.request",
    )
    sumo_error(await h.client.get(f"{url}/nope", auth=reader, headers=HEADERS), 400, "bad.request")
    # 403: a read-only key cannot create.
    body = new_org("Denied", "us1", 1_000)
    created = await h.client.post(url, json=body, auth=reader, headers=HEADERS)
    sumo_error(created, 403, "forbidden")
    sumo = await sdk(h, live, h.root.org_id, ["orgs:read"])
    await raises(live, 403, sumo.post, "/organizations", body, headers=HEADERS)
    # 404: an org outside the key's reach (the root, seen from a child's key).
    writer = await sdk(h, live, h.root.org_id, ["orgs:write", "credits:write"])
    child = (await live.call(writer.post, "/organizations", body, headers=HEADERS)).json()
    child_key = (
        await h.client.post(
            f"/orgs/{await public_id(h, child['orgId'])}/api_keys",
            json={"name": "c", "scopes": ["orgs:read"], "kind": "sumologic"},
            headers=h.auth(),
        )
    ).json()
    async with h.services.db.read() as conn:
        root_key = (
            await conn.execute(sa.select(orgs.c.id).where(orgs.c.public_id == h.root.org_id))
        ).scalar_one()
    root_sumo_id = sumo_org_id("us1", root_key)
    response = await h.client.get(
        f"{url}/{root_sumo_id}",
        auth=httpx.BasicAuth(child_key["access_id"], child_key["access_key"]),
        headers=HEADERS,
    )
    sumo_error(response, 404, "notfound")
    await raises(live, 404, sumo.get, f"/organizations/us1-{0xFFFF:016X}", headers=HEADERS)
    # 409 from the core: more credits than the parent has; nothing is written.
    reason = await raises(
        live, 409, writer.post, "/organizations", new_org("Big", "us1", 99_000), headers=HEADERS
    )
    assert "available" in reason
    children = (await h.client.get(f"/orgs/{h.root.org_id}/children", headers=h.auth())).json()
    assert [c["name"] for c in children["data"]] == ["Denied"]
    bad_name = await h.client.post(
        url,
        json={**body, "organizationName": "bad/name"},
        auth=basic(*await sumo_key(h, h.root.org_id, ["orgs:write"])),
        headers=HEADERS,
    )
    sumo_error(bad_name, 400, "bad.request")
