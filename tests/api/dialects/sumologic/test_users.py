"""Sumo Logic users and roles (/sumologic/api/v1/users, /v1/roles, /v2/roles), driven with the
real sumologic-sdk 0.2.1.

The SDK has no users or roles helpers: its generic methods ``get``/``post``/``put``/``delete``
(relative paths, ``version=`` for v2) are the SDK's way to call them, and they raise
``requests.HTTPError`` on 4xx as against the real service. Every effect is checked through the
native API (same user, same roles, same audit entries).
"""

from __future__ import annotations

import httpx
import pytest
import requests
from sumologic import SumoLogic

from orgplane.api.dialects.sumologic import limits
from support.auth import PASSWORD, bearer, insert_user, sign_in
from support.harness import Harness, LiveServer
from support.mfa import enrol, session
from support.sumologic import BASE, basic, raises, sdk, sumo_error, sumo_key


async def native_user(h: Harness, org: str, user: str) -> httpx.Response:
    return await h.client.get(f"/orgs/{org}/users/{user}", headers=h.auth())


async def audit_actions(h: Harness, org: str) -> list[str]:
    response = await h.client.get(f"/orgs/{org}/audit", params={"limit": 200}, headers=h.auth())
    assert response.status_code == 200, response.text
    return [entry["action"] for entry in response.json()["data"]]


async def test_users_lifecycle_through_the_sdk(h: Harness, live: LiveServer, relaxed: None) -> None:
    org = h.root.org_id
    sumo = await sdk(h, live, org, ["users:write"])
    body = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"}
    created = (await live.call(sumo.post, "/users", {**body, "roleIds": ["standard"]})).json()
    assert created["email"] == "ada@example.com" and created["roleIds"] == ["standard"]
    assert created["isActive"] is True and created["isLocked"] is False
    assert created["isMfaEnabled"] is False and created["lastLoginTimestamp"] is None
    uid = created["id"]
    native = (await native_user(h, org, uid)).json()
    assert (native["email"], native["first_name"], native["roles"]) == (
        "ada@example.com",
        "Ada",
        ["standard"],
    )
    other = (
        await live.call(
            sumo.post,
            "/users",
            {"firstName": "Bob", "lastName": "B", "email": "bob@example.com", "roleIds": []},
        )
    ).json()

    got = (await live.call(sumo.get, f"/users/{uid}")).json()
    assert got == created
    first = (await live.call(sumo.get, "/users", {"limit": 1, "sortBy": "email"})).json()
    assert [u["email"] for u in first["data"]] == ["ada@example.com"] and first["next"]
    second = (await live.call(sumo.get, "/users", {"limit": 1, "token": first["next"]})).json()
    assert [u["email"] for u in second["data"]] == ["bob@example.com"]
    by_email = (await live.call(sumo.get, "/users", {"email": "bob@example.com"})).json()
    assert [u["id"] for u in by_email["data"]] == [other["id"]]

    update = {"firstName": "Augusta", "lastName": "King", "roleIds": ["read-only"]}
    updated = (await live.call(sumo.put, f"/users/{uid}", {**update, "isActive": False})).json()
    assert (updated["firstName"], updated["roleIds"], updated["isActive"]) == (
        "Augusta",
        ["read-only"],
        False,
    )
    native = (await native_user(h, org, uid)).json()
    assert (native["first_name"], native["roles"], native["status"]) == (
        "Augusta",
        ["read-only"],
        "disabled",
    )
    await live.call(sumo.put, f"/users/{uid}", {**update, "isActive": True})
    assert (await native_user(h, org, uid)).json()["status"] == "pending"

    for call in (
        (sumo.post, f"/users/{uid}/email/requestChange", {"email": "augusta@example.com"}),
        (sumo.post, f"/users/{uid}/password/reset", None),
        (sumo.post, f"/users/{uid}/unlock", None),
        (sumo.put, f"/users/{uid}/mfa/disable", {"email": "ada@example.com", "password": "x"}),
        (sumo.post, f"/users/{uid}/resendWelcomeEmail", None),
    ):
        response = await live.call(*call)
        assert response.status_code == 204, call
    actions = await audit_actions(h, org)
    for action in ("user.mfa_disabled", "invitation.resent", "user.updated", "user.created"):
        assert action in actions, action
    # The MFA call names the user by email; another's is a 400 naming the field.
    reason = await raises(
        live,
        400,
        sumo.put,
        f"/users/{uid}/mfa/disable",
        {"email": "bob@example.com", "password": ""},
    )
    assert "email" in reason

    # Delete, handing the user's keys to Bob.
    deleted = await live.call(sumo.delete, f"/users/{uid}", {"transferTo": other["id"]})
    assert deleted.status_code == 204
    assert (await native_user(h, org, uid)).status_code == 404
    await raises(live, 404, sumo.get, f"/users/{uid}")
    # Bob has no open invitation once he is gone either way: resend for a removed user is a 404.
    await raises(live, 404, sumo.post, f"/users/{uid}/resendWelcomeEmail", None)


async def test_mfa_disable_resets_an_enrolled_users_second_factor(
    h: Harness, live: LiveServer, relaxed: None
) -> None:
    org = h.root.org_id
    await insert_user(h, "ada@example.com", {org: ["standard"]})
    token = await session(h, "ada@example.com")
    await enrol(h, token)
    sumo = await sdk(h, live, org, ["users:write"])
    (uid,) = [
        u["id"]
        for u in (await live.call(sumo.get, "/users")).json()["data"]
        if u["email"] == "ada@example.com"
    ]
    assert (await live.call(sumo.get, f"/users/{uid}")).json()["isMfaEnabled"] is True
    response = await live.call(
        sumo.put, f"/users/{uid}/mfa/disable", {"email": "ada@example.com", "password": "x"}
    )
    assert response.status_code == 204
    assert (await live.call(sumo.get, f"/users/{uid}")).json()["isMfaEnabled"] is False
    assert (await h.client.get("/me/mfa", headers=bearer(token))).json()["enabled"] is False
    assert (await sign_in(h, "ada@example.com", PASSWORD)).status_code == 200


async def test_roles_v1_and_v2_with_capabilities_and_users(
    h: Harness, live: LiveServer, relaxed: None
) -> None:
    org = h.root.org_id
    sumo = await sdk(h, live, org, ["users:write"])
    user = (
        await live.call(
            sumo.post,
            "/users",
            {"firstName": "C", "lastName": "D", "email": "c@example.com", "roleIds": []},
        )
    ).json()["id"]

    # autofillDependencies (default true) adds what manageOrganizations needs.
    role = (
        await live.call(
            sumo.post,
            "/roles",
            {
                "name": "Org managers",
                "description": "manage orgs",
                "filterPredicate": "",
                "users": [user],
                "capabilities": ["manageOrganizations", "manageAccessKeys"],
            },
        )
    ).json()
    assert role["capabilities"] == ["manageAccessKeys", "manageOrganizations", "viewOrganizations"]
    assert role["users"] == [user] and role["systemDefined"] is False
    native = (await h.client.get(f"/orgs/{org}/roles/{role['id']}", headers=h.auth())).json()
    assert sorted(native["capabilities"]) == [
        "manageApiKeys",
        "manageOrganizations",
        "viewOrganizations",
    ]
    assert role["id"] in (await native_user(h, org, user)).json()["roles"]

    # Without autofill a missing dependency is a 400; an unsupported capability too.
    missing = {"name": "X", "capabilities": ["manageUsersAndRoles"], "autofillDependencies": False}
    reason = await raises(live, 400, sumo.post, "/roles", missing)
    assert "manageUsersAndRoles needs viewUsersAndRoles" in reason
    reason = await raises(
        live, 400, sumo.post, "/roles", {"name": "Y", "capabilities": ["viewCse"]}
    )
    assert "viewCse" in reason
    reason = await raises(live, 400, sumo.post, "/roles", {"name": "Z", "filterPredicate": "_x"})
    assert "filterPredicate" in reason

    # PUT replaces fields and holders; assign/remove one user.
    put_body = {"name": "Org viewers", "description": "", "filterPredicate": "", "users": []}
    updated = (
        await live.call(
            sumo.put, f"/roles/{role['id']}", {**put_body, "capabilities": ["viewOrganizations"]}
        )
    ).json()
    assert (updated["name"], updated["capabilities"], updated["users"]) == (
        "Org viewers",
        ["viewOrganizations"],
        [],
    )
    assert role["id"] not in (await native_user(h, org, user)).json()["roles"]
    assigned = (await live.call(sumo.put, f"/roles/{role['id']}/users/{user}", None)).json()
    assert assigned["users"] == [user]
    assert role["id"] in (await native_user(h, org, user)).json()["roles"]
    removed = await live.call(sumo.delete, f"/roles/{role['id']}/users/{user}")
    assert removed.status_code == 204
    assert role["id"] not in (await native_user(h, org, user)).json()["roles"]

    # v2: the same roles, with v2's filter fields.
    listed = (await live.call(sumo.get, "/roles", {"name": "org viewers"}, version="v2")).json()
    assert [r["id"] for r in listed["data"]] == [role["id"]]
    assert listed["data"][0]["selectionType"] == "All" and listed["next"] is None
    all_v1 = (await live.call(sumo.get, "/roles", {"limit": 2})).json()
    assert len(all_v1["data"]) == 2 and all_v1["next"]
    system = (await live.call(sumo.get, "/roles/administrator")).json()
    assert system["systemDefined"] is True and "manageUsersAndRoles" in system["capabilities"]
    await raises(live, 409, sumo.put, "/roles/administrator", {**put_body, "capabilities": []})

    v2 = (
        await live.call(
            sumo.post,
            "/roles",
            {"name": "Auditors", "capabilities": ["searchAuditIndex"], "users": [user]},
            version="v2",
        )
    ).json()
    assert v2["capabilities"] == ["searchAuditIndex"] and v2["logAnalyticsFilter"] == ""
    native = (await h.client.get(f"/orgs/{org}/roles/{v2['id']}", headers=h.auth())).json()
    assert native["capabilities"] == ["viewAuditLog"]
    v2_body = {"name": "Auditors 2", "capabilities": ["searchAuditIndex"], "users": []}
    changed = (await live.call(sumo.put, f"/roles/{v2['id']}", v2_body, version="v2")).json()
    assert changed["name"] == "Auditors 2" and changed["users"] == []
    await live.call(sumo.put, f"/roles/{v2['id']}/users/{user}", None, version="v2")
    assert (await live.call(sumo.get, f"/roles/{v2['id']}", version="v2")).json()["users"] == [user]
    await live.call(sumo.delete, f"/roles/{v2['id']}/users/{user}", version="v2")
    reason = await raises(
        live, 400, sumo.post, "/roles", {"name": "V", "selectionType": "Allow"}, version="v2"
    )
    assert "selectionType" in reason
    assert (await live.call(sumo.delete, f"/roles/{v2['id']}", version="v2")).status_code == 204
    assert (await live.call(sumo.delete, f"/roles/{role['id']}")).status_code == 204
    for gone in (role["id"], v2["id"]):
        response = await h.client.get(f"/orgs/{org}/roles/{gone}", headers=h.auth())
        assert response.status_code == 404


async def test_errors_use_sumo_logics_envelope_and_sdk_exceptions(
    h: Harness, live: LiveServer, relaxed: None
) -> None:
    org = h.root.org_id
    access_id, access_key = await sumo_key(h, org, ["users:read"])
    auth = basic(access_id, access_key)

    # 401: no or wrong credentials.
    sumo_error(await h.client.get(f"{BASE}/v1/users"), 401, "unauthorized")
    wrong = await h.client.get(f"{BASE}/v1/users", auth=basic(access_id, "x" * 64))
    sumo_error(wrong, 401, "unauthorized")
    assert wrong.headers["www-authenticate"].startswith("Basic")
    bad = SumoLogic(access_id, "y" * 64, endpoint=f"{live.url}{BASE}")
    await raises(live, 401, bad.get, "/users")

    # 403: the key lacks users:write.
    body = {"firstName": "E", "lastName": "F", "email": "e@example.com", "roleIds": []}
    sumo_error(await h.client.post(f"{BASE}/v1/users", json=body, auth=auth), 403, "forbidden")
    sumo = SumoLogic(access_id, access_key, endpoint=f"{live.url}{BASE}")
    await raises(live, 403, sumo.post, "/users", body)
    assert (await h.client.get(f"/orgs/{org}/users", headers=h.auth())).json()["data"] == []

    # 404: a user or role that is not in the key's organization.
    sumo_error(await h.client.get(f"{BASE}/v1/users/usr_nope", auth=auth), 404, "notfound")
    await raises(live, 404, sumo.get, "/roles/rol_nope")

    # 400: invalid input names the field.
    writer = await sdk(h, live, org, ["users:write"])
    no_email = {"firstName": "E", "lastName": "F", "roleIds": []}
    reason = await raises(live, 400, writer.post, "/users", no_email)
    assert "email" in reason
    response = await h.client.post(
        f"{BASE}/v1/users",
        json={**body, "email": "not-an-email"},
        auth=basic(*(await sumo_key(h, org, ["users:write"]))),
    )
    error = sumo_error(response, 400, "bad.request")
    assert error["errors"][0]["meta"]["field"] == "email"
    reason = await raises(live, 400, writer.post, "/users", {**body, "roleIds": ["nope"]})
    assert "nope" in reason
    assert (await h.client.get(f"/orgs/{org}/users", headers=h.auth())).json()["data"] == []


async def test_four_requests_per_second_per_access_key(h: Harness, live: LiveServer) -> None:
    access_id, access_key = await sumo_key(h, h.root.org_id, ["users:read"])
    auth = basic(access_id, access_key)
    responses = [await h.client.get(f"{BASE}/v1/users", auth=auth) for _ in range(6)]
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) <= 4 and 429 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 429)
    sumo_error(refused, 429, "rate.limit.exceeded")
    assert 1 <= int(refused.headers["retry-after"]) <= 1
    # The SDK's POST is not retried: the 429 raises HTTPError, as against Sumo Logic.
    sumo = SumoLogic(access_id, access_key, endpoint=f"{live.url}{BASE}")
    body = {"firstName": "G", "lastName": "H", "email": "g@example.com", "roleIds": []}
    for _ in range(5):
        try:
            await live.call(sumo.post, "/users", body)
        except requests.HTTPError as exc:
            assert exc.response is not None
            if exc.response.status_code == 429:
                break
            assert exc.response.status_code == 403  # under the limit: the key lacks users:write
    else:
        pytest.fail("five rapid POSTs were never refused with 429")
    # Another key has its own counter.
    other = basic(*(await sumo_key(h, h.root.org_id, ["users:read"])))
    assert (await h.client.get(f"{BASE}/v1/users", auth=other)).status_code == 200


async def test_ten_concurrent_requests_per_access_key(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = await h.client.post(
        f"/orgs/{h.root.org_id}/api_keys",
        json={"name": "busy", "scopes": ["users:read"], "kind": "sumologic"},
        headers=h.auth(),
    )
    key = response.json()
    auth = basic(key["access_id"], key["access_key"])
    # Ten requests of this key are in flight in this process: the eleventh is refused.
    monkeypatch.setitem(limits._in_flight, key["id"], limits.MAX_CONCURRENT)
    refused = await h.client.get(f"{BASE}/v1/users", auth=auth)
    sumo_error(refused, 429, "rate.limit.exceeded")
    assert refused.headers["retry-after"] == "1"
    monkeypatch.setitem(limits._in_flight, key["id"], limits.MAX_CONCURRENT - 1)
    assert (await h.client.get(f"{BASE}/v1/users", auth=auth)).status_code == 200
    # The slot taken by that request was given back when it ended.
    assert limits.in_flight(key["id"]) == limits.MAX_CONCURRENT - 1
