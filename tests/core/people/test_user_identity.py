"""Managing a member's sign-in identity: unlock, password reset and email change tokens, and
the keys a signed-in user creates."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from orgplane.models import credentials, users
from support.auth import PASSWORD, WRONG, bearer, insert_user, sign_in, user_row
from support.harness import Harness


async def _public_id(h: Harness, user_pk: int) -> str:
    return str((await user_row(h, user_pk)).public_id)


async def test_an_admin_unlocks_a_locked_member(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "locked@example.com", {root: ["standard"]})
    uid = await _public_id(h, user_pk)
    for _ in range(5):
        assert (await sign_in(h, "locked@example.com", WRONG)).status_code == 401
    assert (await user_row(h, user_pk)).locked_at is not None
    assert (await sign_in(h, "locked@example.com", PASSWORD)).status_code == 401

    no_scope = await h.create_key(root, ["users:read"])
    refused = await h.client.post(f"/orgs/{root}/users/{uid}/unlock", headers=h.auth(no_scope))
    assert refused.status_code == 403
    response = await h.client.post(f"/orgs/{root}/users/{uid}/unlock", headers=h.auth())
    assert response.status_code == 200, response.text
    assert (await user_row(h, user_pk)).locked_at is None
    assert (await sign_in(h, "locked@example.com", PASSWORD)).status_code == 200
    audit = await h.client.get(f"/orgs/{root}/audit?action=user.unlocked", headers=h.auth())
    assert len(audit.json()["data"]) >= 1


async def test_a_reset_token_is_issued_once_and_sets_a_new_password(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "forgetful@example.com", {root: ["read-only"]})
    uid = await _public_id(h, user_pk)
    response = await h.client.post(f"/orgs/{root}/users/{uid}/password/reset", headers=h.auth())
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert set(response.json()) == {"token"}
    new_password = "a brand new passphrase"
    done = await h.client.post(
        "/auth/password/reset", json={"token": token, "password": new_password}
    )
    assert done.status_code in (200, 204), done.text
    assert (await sign_in(h, "forgetful@example.com", new_password)).status_code == 200
    again = await h.client.post(
        "/auth/password/reset", json={"token": token, "password": "yet another passphrase"}
    )
    assert again.status_code >= 400


async def test_an_email_change_is_requested_for_a_member_and_confirmed(h: Harness) -> None:
    root = h.root.org_id
    user_pk = await insert_user(h, "old@example.com", {root: ["standard"]})
    await insert_user(h, "taken@example.com", {root: ["standard"]})
    uid = await _public_id(h, user_pk)
    url = f"/orgs/{root}/users/{uid}/email/request_change"
    taken = await h.client.post(url, json={"new_email": "TAKEN@example.com"}, headers=h.auth())
    assert taken.status_code == 409
    bad = await h.client.post(url, json={"new_email": "not an address"}, headers=h.auth())
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "new_email"
    response = await h.client.post(url, json={"new_email": "new@example.com"}, headers=h.auth())
    assert response.status_code == 201, response.text
    confirmed = await h.client.post("/auth/email/confirm", json={"token": response.json()["token"]})
    assert confirmed.status_code in (200, 204), confirmed.text
    assert (await user_row(h, user_pk)).email_normalized == "new@example.com"
    assert (await sign_in(h, "new@example.com", PASSWORD)).status_code == 200


async def test_identity_endpoints_stay_inside_reach(h: Harness) -> None:
    root = h.root.org_id
    child = (await h.create_org(root, "Child"))["id"]
    sibling = (await h.create_org(root, "Sibling"))["id"]
    user_pk = await insert_user(h, "member@example.com", {sibling: ["standard"]})
    uid = await _public_id(h, user_pk)
    child_key = await h.create_key(child, ["*"])
    for path in ("unlock", "password/reset"):
        response = await h.client.post(
            f"/orgs/{sibling}/users/{uid}/{path}", headers=h.auth(child_key)
        )
        assert response.status_code == 404
        missing = await h.client.post(f"/orgs/{sibling}/users/{uid}/{path}")
        assert missing.status_code == 401
    # Not a member of the child: the child's admin cannot reach this user through it.
    response = await h.client.post(
        f"/orgs/{child}/users/{uid}/password/reset", headers=h.auth(child_key)
    )
    assert response.status_code == 404


async def test_a_signed_in_user_creates_a_key_bound_to_themselves(h: Harness) -> None:
    root = h.root.org_id
    await insert_user(h, "admin@example.com", {root: ["administrator"]})
    login = await sign_in(h, "admin@example.com", PASSWORD)
    assert login.status_code == 200, login.text
    session = login.json()["token"]
    # No expiry: a session's own 12 hours do not cap the keys its user creates.
    response = await h.client.post(
        f"/orgs/{root}/api_keys",
        json={"name": "automation", "scopes": ["orgs:read"]},
        headers=bearer(session),
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert created["expires_at"] is None
    async with h.services.db.read() as conn:
        row = (
            await conn.execute(
                sa.select(credentials.c.created_by, credentials.c.user_id, users.c.email)
                .join(users, users.c.id == credentials.c.user_id)
                .where(credentials.c.public_id == created["id"])
            )
        ).one()
    assert row.created_by is None
    assert row.email == "admin@example.com"
    assert (
        await h.client.get(f"/orgs/{root}", headers=h.auth(created["api_key"]))
    ).status_code == 200


async def _key(h: Harness, org: str, by: dict[str, str], **fields: Any) -> Any:
    return await h.client.post(
        f"/orgs/{org}/api_keys", json={"name": "k", "scopes": ["*"], **fields}, headers=by
    )


async def test_keys_bind_only_to_members_and_never_to_more_power(h: Harness) -> None:
    root = h.root.org_id
    admin_pk = await insert_user(h, "boss@example.com", {root: ["administrator"]})
    keeper_pk = await insert_user(h, "keeper@example.com", {root: ["read-only"]})
    outsider_pk = await insert_user(h, "outsider@example.com", {})
    admin, keeper, outsider = [await _public_id(h, pk) for pk in (admin_pk, keeper_pk, outsider_pk)]

    # Only members of the key's org can be named.
    refused = await _key(h, root, h.auth(), user_id=outsider)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "user_id"

    # A key bound to the read-only keeper (made by the unbound root key) acts as the keeper.
    bound = await _key(h, root, h.auth(), user_id=keeper, scopes=["orgs:read", "keys:write"])
    assert bound.status_code == 201, bound.text
    keeper_key = bound.json()["api_key"]
    assert bound.json()["user_id"] == keeper
    # The keeper cannot manage keys at all: its roles lack manageApiKeys.
    assert (await _key(h, root, h.auth(keeper_key), scopes=["orgs:read"])).status_code == 403

    # An administrator's session mints keys bound to itself by default, and may bind one to a
    # member who holds no more than it does, but not mint an unbound one for someone stronger.
    session = (await sign_in(h, "boss@example.com", PASSWORD)).json()["token"]
    own = await _key(h, root, bearer(session), scopes=["orgs:read"])
    assert own.status_code == 201, own.text
    assert own.json()["user_id"] == admin
    weaker = await _key(h, root, bearer(session), user_id=keeper, scopes=["orgs:read"])
    assert weaker.status_code == 201, weaker.text

    # A member who may manage keys but little else cannot bind a key to the administrator.
    role = await h.client.post(
        f"/orgs/{root}/roles",
        json={"name": "Key keeper", "capabilities": ["manageApiKeys", "viewOrganizations"]},
        headers=h.auth(),
    )
    assert role.status_code == 201, role.text
    await insert_user(h, "keys@example.com", {root: [role.json()["id"]]})
    keys_session = (await sign_in(h, "keys@example.com", PASSWORD)).json()["token"]
    mine = await _key(h, root, bearer(keys_session), scopes=["orgs:read"])
    assert mine.status_code == 201, mine.text
    stronger = await _key(h, root, bearer(keys_session), user_id=admin, scopes=["orgs:read"])
    assert stronger.status_code == 403
    assert "manageApiKeys" not in stronger.json()["detail"]


async def test_sign_in_attempts_are_limited_per_address(db_url: str) -> None:
    from support.harness import start_harness, stop_harness

    h = await start_harness(db_url, rate_limit_sign_in_per_ip="3/minute")
    try:
        await insert_user(h, "guess@example.com", {h.root.org_id: ["standard"]})
        statuses = [(await sign_in(h, "guess@example.com", WRONG)).status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        limited = await sign_in(h, "guess@example.com", PASSWORD)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["ratelimit-limit"] == "3"
        assert limited.headers["content-type"].startswith("application/problem+json")
        # The other unauthenticated password and token endpoints share the same budget.
        accept = await h.client.post("/invitations/opi_x/accept", json={"password": PASSWORD})
        assert accept.status_code == 429
        # Authenticated API calls are limited per key and org, not by this.
        assert (await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth())).status_code == 200
    finally:
        await stop_harness(h)
