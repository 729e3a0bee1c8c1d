"""A key bound to a user stops (or follows its new holder) at once when the user is removed or
disabled, through every surface that can do it: the command registers the key cache's
invalidation (``tx.forget_keys``), no handler has to remember it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from orgplane.core.ids import hash_secret
from support.harness import Harness
from support.keys import dialect_key

PASSWORD = "correct horse battery staple"


async def _active_user(h: Harness, org: str, email: str, roles: list[str]) -> str:
    response = await h.client.post(
        f"/orgs/{org}/invitations", json={"email": email, "roles": roles}, headers=h.auth()
    )
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    response = await h.client.post(f"/invitations/{token}/accept", json={"password": PASSWORD})
    assert response.status_code == 200, response.text
    user_id: str = response.json()["user_id"]
    return user_id


async def _get_org(h: Harness, org: str, secret: str) -> int:
    response = await h.client.get(f"/orgs/{org}", headers=h.auth(secret))
    return response.status_code


Action = Callable[[str, str], Awaitable[Any]]


async def test_a_bound_key_stops_at_once_when_its_user_is_removed_or_disabled(
    h: Harness,
) -> None:
    root = h.root.org_id
    org = (await h.create_org(root, "Team"))["id"]
    scim_key = await h.create_key(org, ["users:write"])
    sumo = await dialect_key(h, org, "sumologic", ["users:write"])
    dd = await dialect_key(h, org, "datadog", ["users:write"])
    dd_headers = {"DD-API-KEY": dd["api_key"], "DD-APPLICATION-KEY": dd["application_key"]}
    sumo_auth = (sumo["access_id"], sumo["access_key"])

    async def scim_patch_inactive(org: str, user: str) -> Any:
        return await h.client.patch(
            f"/scim/v2/Users/{user}",
            json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": False}],
            },
            headers=h.auth(scim_key),
        )

    async def sumo_inactive(org: str, user: str) -> Any:
        return await h.client.put(
            f"/sumologic/api/v1/users/{user}",
            json={"firstName": "Someone", "lastName": "", "isActive": False},
            auth=sumo_auth,
        )

    async def dd_patch_disabled(org: str, user: str) -> Any:
        return await h.client.patch(
            f"/datadog/api/v2/users/{user}",
            json={"data": {"id": user, "type": "users", "attributes": {"disabled": True}}},
            headers=dd_headers,
        )

    actions: dict[str, Action] = {
        "native remove": lambda o, u: h.client.delete(f"/orgs/{o}/users/{u}", headers=h.auth()),
        "native disable": lambda o, u: h.client.post(
            f"/orgs/{o}/users/{u}/disable", headers=h.auth()
        ),
        "scim delete": lambda o, u: h.client.delete(
            f"/scim/v2/Users/{u}", headers=h.auth(scim_key)
        ),
        "scim active false": scim_patch_inactive,
        "sumologic delete": lambda o, u: h.client.delete(
            f"/sumologic/api/v1/users/{u}", auth=sumo_auth
        ),
        "sumologic isActive false": sumo_inactive,
        "datadog disable": lambda o, u: h.client.delete(
            f"/datadog/api/v2/users/{u}", headers=dd_headers
        ),
        "datadog disabled true": dd_patch_disabled,
    }
    for i, (surface, act) in enumerate(actions.items()):
        user = await _active_user(h, org, f"k{i}@example.com", ["standard"])
        secret = await h.create_key(org, ["orgs:read"], user_id=user)
        assert await _get_org(h, org, secret) == 200, surface
        assert h.services.keys.get(hash_secret(secret)) is not None, surface  # cached
        response = await act(org, user)
        assert response.status_code in (200, 204), (surface, response.text)
        assert h.services.keys.get(hash_secret(secret)) is None, surface  # forgotten
        assert await _get_org(h, org, secret) == 401, surface


async def test_a_key_handed_over_on_removal_acts_as_its_new_holder_at_once(h: Harness) -> None:
    """A cached principal carries its user: without the invalidation, the key would go on
    acting as the removed user (and be refused) until the cache entry expired."""
    root = h.root.org_id
    org = (await h.create_org(root, "Team"))["id"]
    sumo = await dialect_key(h, org, "sumologic", ["users:write"])
    removals: dict[str, Callable[[str, str], Awaitable[Any]]] = {
        "native": lambda u, heir: h.client.delete(
            f"/orgs/{org}/users/{u}", params={"transfer_to": heir}, headers=h.auth()
        ),
        "sumologic": lambda u, heir: h.client.delete(
            f"/sumologic/api/v1/users/{u}",
            params={"transferTo": heir},
            auth=(sumo["access_id"], sumo["access_key"]),
        ),
    }
    for i, (surface, remove) in enumerate(removals.items()):
        leaving = await _active_user(h, org, f"leaving{i}@example.com", ["standard"])
        heir = await _active_user(h, org, f"heir{i}@example.com", ["standard"])
        secret = await h.create_key(org, ["orgs:read"], user_id=leaving)
        assert await _get_org(h, org, secret) == 200
        response = await remove(leaving, heir)
        assert response.status_code == 204, (surface, response.text)
        assert await _get_org(h, org, secret) == 200, surface
        response = await h.client.get(f"/orgs/{org}/api_keys", headers=h.auth())
        bound = [k["user_id"] for k in response.json()["data"] if k["user_id"]]
        assert heir in bound and leaving not in bound
