"""Make's users in organizations (/make/api/v2): roles, user-organization-roles, invitations
and the token's authorization, shaped like Make's TypeScript SDK's requests; effects checked
natively."""

from __future__ import annotations

from typing import Any

from orgplane.core.bootstrap import create_root_with_admin_key
from support.harness import Harness
from support.make import BASE, make_error, make_key, org_key, token


async def native_users(h: Harness, org: str) -> dict[str, dict[str, Any]]:
    response = await h.client.get(f"/orgs/{org}/users", headers=h.auth())
    assert response.status_code == 200, response.text
    return {u["email"]: u for u in response.json()["data"]}


async def test_invite_list_and_change_roles(h: Harness) -> None:
    secret = await make_key(h, h.root.org_id, ["users:write", "orgs:read"])
    child = await h.create_org(h.root.org_id, "Team")
    key = await org_key(h, child["id"])

    roles = await h.client.get(f"{BASE}/users/roles", headers=token(secret))
    assert roles.status_code == 200, roles.text
    by_id = {r["id"]: r for r in roles.json()["usersRoles"]}
    assert {i: r["identifier"] for i, r in by_id.items()} == {
        11: "owner",
        12: "administrator",
        13: "standard",
        14: "read-only",
    }
    assert "manageUsersAndRoles" in by_id[12]["permissions"]
    assert "manageUsersAndRoles" not in by_id[14]["permissions"]

    invited = await h.client.post(
        f"{BASE}/organizations/{key}/invite",
        json={"email": "ada@example.com", "name": "Ada Lovelace", "usersRoleId": 12},
        headers=token(secret),
    )
    assert invited.status_code == 200, invited.text
    user = invited.json()["user"]
    assert (user["email"], user["name"]) == ("ada@example.com", "Ada Lovelace")
    assert invited.json()["userOrganizationRole"] == {
        "userId": user["id"],
        "organizationId": key,
        "usersRoleId": 12,
        "invitation": "pending",
    }
    native = (await native_users(h, child["id"]))["ada@example.com"]
    assert (native["roles"], native["status"], native["last_name"]) == (
        ["administrator"],
        "pending",
        "Lovelace",
    )
    invitations = await h.client.get(f"/orgs/{child['id']}/invitations", headers=h.auth())
    assert [i["status"] for i in invitations.json()["data"]] == ["pending"]

    listed = await h.client.get(
        f"{BASE}/organizations/{key}/user-organization-roles", headers=token(secret)
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["userOrganizationRoles"] == [invited.json()["userOrganizationRole"]]
    one = await h.client.get(
        f"{BASE}/organizations/{key}/user-organization-roles/{user['id']}", headers=token(secret)
    )
    assert one.json()["userOrganizationRole"]["usersRoleId"] == 12

    # A second administrator, then the first one becomes read-only.
    await h.client.post(
        f"{BASE}/organizations/{key}/invite",
        json={"email": "grace@example.com", "name": "Grace", "usersRoleId": 12},
        headers=token(secret),
    )
    changed = await h.client.post(
        f"{BASE}/users/{user['id']}/user-organization-roles/{key}",
        json={"usersRoleId": 14},
        headers=token(secret),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["userOrganizationRole"]["usersRoleId"] == 14
    assert (await native_users(h, child["id"]))["ada@example.com"]["roles"] == ["read-only"]

    for body, status, code in (
        ({"usersRoleId": 99}, 400, "IM005"),
        ({"usersRoleId": "admin"}, 400, "IM005"),
    ):
        refused = await h.client.post(
            f"{BASE}/users/{user['id']}/user-organization-roles/{key}",
            json=body,
            headers=token(secret),
        )
        assert "usersRoleId" in make_error(refused, status, code)["detail"]
    bad = await h.client.post(
        f"{BASE}/organizations/{key}/invite",
        json={"email": "nope", "name": "X"},
        headers=token(secret),
    )
    make_error(bad, 400, "IM005")
    teams = await h.client.post(
        f"{BASE}/organizations/{key}/invite",
        json={"email": "t@example.com", "name": "T", "teamsId": [1]},
        headers=token(secret),
    )
    assert "teamsId" in make_error(teams, 400, "IM005")["detail"]
    again = await h.client.post(
        f"{BASE}/organizations/{key}/invite",
        json={"email": "ADA@example.com", "name": "Ada"},
        headers=token(secret),
    )
    make_error(again, 409, "SC409")
    assert set(await native_users(h, child["id"])) == {"ada@example.com", "grace@example.com"}


async def test_current_authorization_reports_make_scopes(h: Harness) -> None:
    everything = await make_key(h, h.root.org_id, ["*"])
    response = await h.client.get(
        f"{BASE}/users/me/current-authorization", headers=token(everything)
    )
    assert response.status_code == 200, response.text
    assert response.json()["authorization"] == {
        "authUsed": "token",
        "scope": [
            "organizations:read",
            "organizations:write",
            "managed-organizations:read",
            "managed-organizations:write",
            "user:read",
            "user:write",
        ],
    }
    narrow = await make_key(h, h.root.org_id, ["orgs:read", "users:read"])
    scopes = (
        await h.client.get(f"{BASE}/users/me/current-authorization", headers=token(narrow))
    ).json()["authorization"]["scope"]
    assert scopes == ["organizations:read", "user:read"]


async def test_people_scopes_reach_and_missing_users(h: Harness) -> None:
    reader = await make_key(h, h.root.org_id, ["users:read"])
    orgs_only = await make_key(h, h.root.org_id, ["orgs:read"])
    child = await h.create_org(h.root.org_id, "Team")
    key = await org_key(h, child["id"])
    make_error(await h.client.get(f"{BASE}/users/roles", headers=token(orgs_only)), 403, "SC403")
    make_error(
        await h.client.get(
            f"{BASE}/organizations/{key}/user-organization-roles", headers=token(orgs_only)
        ),
        403,
        "SC403",
    )
    denied = await h.client.post(
        f"{BASE}/organizations/{key}/invite",
        json={"email": "x@example.com", "name": "X"},
        headers=token(reader),
    )
    make_error(denied, 403, "SC403")
    assert await native_users(h, child["id"]) == {}
    make_error(
        await h.client.get(
            f"{BASE}/organizations/{key}/user-organization-roles/999999", headers=token(reader)
        ),
        404,
        "SC404",
    )
    other = await h.services.db.transaction(create_root_with_admin_key, name="Other tenant")
    foreign = await org_key(h, other.org_id)
    make_error(
        await h.client.get(
            f"{BASE}/organizations/{foreign}/user-organization-roles", headers=token(reader)
        ),
        404,
        "SC404",
    )
    make_error(await h.client.get(f"{BASE}/users/roles"), 401, "IM102")
