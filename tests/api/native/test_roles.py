"""Roles and capabilities: the catalog, system and custom roles, assignment, and enforcement.

Every test taking ``h`` runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from orgplane.core.people.capabilities import CATALOG
from support.people import actions, make_user, user_key


async def test_capability_catalog(h):
    assert (await h.client.get("/capabilities")).status_code == 401
    response = await h.client.get("/capabilities", headers=h.auth())
    assert response.status_code == 200
    body = response.json()
    assert [c["name"] for c in body["data"]] == list(CATALOG)
    manage = next(c for c in body["data"] if c["name"] == "manageUsersAndRoles")
    assert manage["implies"] == ["viewUsersAndRoles"]
    assert [r["id"] for r in body["system_roles"]] == [
        "owner",
        "administrator",
        "standard",
        "read-only",
    ]


async def test_role_endpoints_answer_401_403_404_and_succeed(h):
    a = (await h.create_org(h.root.org_id, "A"))["id"]
    b = (await h.create_org(h.root.org_id, "B"))["id"]
    a_key = await h.create_key(a, ["*"])
    b_key = await h.create_key(b, ["*"])
    no_scope = await h.create_key(a, ["orgs:write"])
    member = await make_user(h, a, "m@example.com", ["read-only"])
    response = await h.client.post(
        f"/orgs/{a}/roles",
        json={"name": "Auditors", "capabilities": ["viewAuditLog"]},
        headers=h.auth(a_key),
    )
    assert response.status_code == 201, response.text
    role = response.json()["id"]
    caps = {"name": "Auditors", "capabilities": ["viewAuditLog", "viewAccessLog"]}
    endpoints: list[tuple[str, str, dict[str, Any] | None, int]] = [
        ("GET", "/orgs/{org}/roles", None, 200),
        ("POST", "/orgs/{org}/roles", {"name": "Other", "capabilities": []}, 201),
        ("GET", "/orgs/{org}/roles/" + role, None, 200),
        ("PUT", "/orgs/{org}/roles/" + role, caps, 200),
        ("PATCH", "/orgs/{org}/roles/" + role, {"description": "Read logs"}, 200),
        ("PUT", "/orgs/{org}/roles/" + role + "/users/" + member, None, 204),
        ("DELETE", "/orgs/{org}/roles/" + role + "/users/" + member, None, 204),
        ("DELETE", "/orgs/{org}/roles/" + role, None, 204),
    ]
    for method, path, body, ok in endpoints:
        url = path.format(org=a)
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        assert (await h.client.request(method, url, **kwargs)).status_code == 401
        response = await h.client.request(method, url, headers=h.auth(no_scope), **kwargs)
        assert response.status_code == 403, (method, path, response.text)
        response = await h.client.request(method, url, headers=h.auth(b_key), **kwargs)
        assert response.status_code == 404, (method, path, response.text)
        response = await h.client.request(method, url, headers=h.auth(a_key), **kwargs)
        assert response.status_code == ok, (method, path, response.text)
    assert await actions(h, role) == [
        "role.created",
        "role.updated",
        "role.updated",
        "role.deleted",
    ]
    assert await actions(h, member) == ["user.created", "role.assigned", "role.unassigned"]
    response = await h.client.get(f"/orgs/{a}/roles/{role}", headers=h.auth(a_key))
    assert response.status_code == 404


async def test_system_roles_first_and_not_editable_names_unique_capabilities_known(h):
    root = h.root.org_id
    response = await h.client.post(
        f"/orgs/{root}/roles",
        json={"name": "Billing", "capabilities": ["changeCreditsAllocation"]},
        headers=h.auth(),
    )
    assert response.status_code == 201
    listed = (await h.client.get(f"/orgs/{root}/roles", headers=h.auth())).json()["data"]
    assert [(r["id"], r["system"]) for r in listed[:4]] == [
        ("owner", True),
        ("administrator", True),
        ("standard", True),
        ("read-only", True),
    ]
    assert listed[4]["name"] == "Billing" and listed[4]["system"] is False

    for method, body in [("PUT", {"name": "X", "capabilities": []}), ("PATCH", {"name": "X"})]:
        response = await h.client.request(
            method, f"/orgs/{root}/roles/owner", json=body, headers=h.auth()
        )
        assert response.status_code == 409
    assert (await h.client.delete(f"/orgs/{root}/roles/owner", headers=h.auth())).status_code == 409

    for name in ("billing", "BILLING", "Administrator"):
        response = await h.client.post(
            f"/orgs/{root}/roles", json={"name": name, "capabilities": []}, headers=h.auth()
        )
        assert response.status_code == 409, name
    response = await h.client.post(
        f"/orgs/{root}/roles",
        json={"name": "Bad", "capabilities": ["viewOrganizations", "flyPlanes"]},
        headers=h.auth(),
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "field": "capabilities[1]",
            "message": "unknown capability 'flyPlanes'; see GET /capabilities",
        }
    ]
    # The same name in another org is fine.
    child = (await h.create_org(root, "Child"))["id"]
    response = await h.client.post(
        f"/orgs/{child}/roles", json={"name": "Billing", "capabilities": []}, headers=h.auth()
    )
    assert response.status_code == 201


async def test_a_role_in_use_cannot_be_deleted_and_custom_capabilities_apply(h):
    root = h.root.org_id
    await make_user(h, root, "owner@example.com", ["owner"])
    response = await h.client.post(
        f"/orgs/{root}/roles",
        json={"name": "User managers", "capabilities": ["manageUsersAndRoles"]},
        headers=h.auth(),
    )
    role = response.json()["id"]
    user = await make_user(h, root, "um@example.com", [role])
    key = await user_key(h, root, user)
    # manage implies view; nothing else is granted.
    assert (await h.client.get(f"/orgs/{root}/users", headers=h.auth(key))).status_code == 200
    response = await h.client.get(f"/orgs/{root}", headers=h.auth(key))
    assert response.status_code == 403
    assert "viewOrganizations" in response.json()["detail"]

    response = await h.client.delete(f"/orgs/{root}/roles/{role}", headers=h.auth())
    assert response.status_code == 409
    assert "held by 1 user" in response.json()["detail"]
    # Holders cannot hand out capabilities they lack (owner's).
    response = await h.client.patch(
        f"/orgs/{root}/users/{user}", json={"roles": [role, "owner"]}, headers=h.auth(key)
    )
    assert response.status_code == 403
    response = await h.client.patch(
        f"/orgs/{root}/roles/{role}",
        json={"capabilities": ["manageUsersAndRoles", "viewOrganizations"]},
        headers=h.auth(key),
    )
    assert response.status_code == 403
    # Changing the role's capabilities takes effect on the next request.
    response = await h.client.patch(
        f"/orgs/{root}/roles/{role}", json={"capabilities": ["viewOrganizations"]}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    assert (await h.client.get(f"/orgs/{root}", headers=h.auth(key))).status_code == 200
    assert (await h.client.get(f"/orgs/{root}/users", headers=h.auth(key))).status_code == 403

    response = await h.client.delete(f"/orgs/{root}/roles/{role}/users/{user}", headers=h.auth())
    assert response.status_code == 204
    assert (
        await h.client.delete(f"/orgs/{root}/roles/{role}", headers=h.auth())
    ).status_code == 204
    # Assigning an unknown role, or to a non-member: 404 naming it.
    response = await h.client.put(f"/orgs/{root}/roles/{role}/users/{user}", headers=h.auth())
    assert response.status_code == 404 and role in response.json()["detail"]
    response = await h.client.put(f"/orgs/{root}/roles/standard/users/usr_x", headers=h.auth())
    assert response.status_code == 404 and "usr_x" in response.json()["detail"]
