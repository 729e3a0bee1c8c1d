"""Users, memberships and invitations: the access matrix, capability enforcement through
user-bound keys, last-owner protection, hand-over on removal, invitation life cycle, audit.

Every test taking ``h`` runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from orgplane.db.engine import Tx
from orgplane.models import invitations, users
from orgplane.models.base import utcnow
from support.people import PASSWORD, actions, invite, make_user, user_key


async def test_user_endpoints_answer_401_403_404_and_succeed(h):
    a = (await h.create_org(h.root.org_id, "A"))["id"]
    b = (await h.create_org(h.root.org_id, "B"))["id"]
    a_key = await h.create_key(a, ["*"])
    no_users_scope = await h.create_key(a, ["orgs:write"])
    target = await make_user(h, a, "target@example.com", ["standard"])
    await make_user(h, a, "boss@example.com", ["owner"])

    endpoints: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/orgs/{org}/users", None),
        ("POST", "/orgs/{org}/users", {"email": "new@example.com"}),
        ("GET", "/orgs/{org}/users/" + target, None),
        ("PATCH", "/orgs/{org}/users/" + target, {"title": "CTO"}),
        ("POST", "/orgs/{org}/users/" + target + "/disable", None),
        ("POST", "/orgs/{org}/users/" + target + "/enable", None),
        ("POST", "/orgs/{org}/invitations", {"email": "inv@example.com"}),
        ("GET", "/orgs/{org}/invitations", None),
        ("DELETE", "/orgs/{org}/users/" + target, None),
    ]
    for method, path, body in endpoints:
        url = path.format(org=a)
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        response = await h.client.request(method, url, **kwargs)
        assert response.status_code == 401, (method, path, response.text)
        response = await h.client.request(method, url, headers=h.auth(no_users_scope), **kwargs)
        assert response.status_code == 403, (method, path, response.text)
        assert "users:" in response.json()["detail"]
        # A sibling's key: org A does not exist for it.
        b_key = await h.create_key(b, ["*"])
        response = await h.client.request(method, url, headers=h.auth(b_key), **kwargs)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"] == f"organization {a!r} not found"
        response = await h.client.request(method, url, headers=h.auth(a_key), **kwargs)
        assert response.status_code in (200, 201, 204), (method, path, response.text)

    # The valid calls had their effects, each audited.
    response = await h.client.get(f"/orgs/{a}/users/{target}", headers=h.auth(a_key))
    assert response.status_code == 404
    assert await actions(h, target) == [
        "user.created",
        "user.updated",
        "user.disabled",
        "user.enabled",
        "user.removed",
    ]
    # An unknown user inside reach is a 404 naming the user.
    response = await h.client.get(f"/orgs/{a}/users/usr_nope", headers=h.auth(a_key))
    assert response.status_code == 404
    assert "usr_nope" in response.json()["detail"]


async def test_a_new_user_is_pending_until_they_accept_and_email_is_case_insensitive(h):
    root = h.root.org_id
    child = (await h.create_org(root, "Child"))["id"]
    response = await h.client.post(
        f"/orgs/{root}/users",
        json={"email": "Ada@Example.com", "first_name": "Ada", "roles": ["read-only"]},
        headers=h.auth(),
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "pending"
    assert created["roles"] == ["read-only"]
    token = created["invitation"]["token"]
    user_id = created["id"]

    # A pending user's key cannot act at all.
    key = await user_key(h, root, user_id)
    assert (await h.client.get(f"/orgs/{root}", headers=h.auth(key))).status_code == 401

    # The same person (another case) in another org: added, not duplicated; no new invitation.
    response = await h.client.post(
        f"/orgs/{child}/users", json={"email": "ADA@example.COM"}, headers=h.auth()
    )
    assert response.status_code == 201, response.text
    assert response.json()["id"] == user_id
    assert response.json()["invitation"] is None
    # Twice in the same org: 409 naming the existing user.
    response = await h.client.post(
        f"/orgs/{root}/users", json={"email": "ada@example.com"}, headers=h.auth()
    )
    assert response.status_code == 409
    assert user_id in response.json()["detail"]

    response = await h.client.post(f"/invitations/{token}/accept", json={"password": PASSWORD})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"
    assert (await h.client.get(f"/orgs/{root}", headers=h.auth(key))).status_code == 200
    async with h.services.db.read() as conn:
        stored = (await conn.execute(sa.select(users).where(users.c.public_id == user_id))).one()
    assert stored.password_hash.startswith("$argon2id$")
    assert stored.email_normalized == "ada@example.com"
    assert await actions(h, user_id) == ["user.created", "user.added"]
    assert await actions(h, created["invitation"]["id"]) == [
        "invitation.created",
        "invitation.accepted",
    ]


async def test_bad_input_is_400_naming_the_field_and_writes_nothing(h):
    root = h.root.org_id
    cases = [
        ({"email": "not-an-email"}, "email"),
        ({"email": "x@example.com", "roles": ["superuser"]}, "roles[0]"),
        ({"email": "x@example.com", "first_name": "a\u0000b"}, "first_name"),
        ({"email": "x@example.com", "nickname": "x"}, "nickname"),
        ({"email": 5}, "email"),
        ({"email": "x@example.com", "title": "t" * 101}, "title"),
    ]
    for body, field in cases:
        response = await h.client.post(f"/orgs/{root}/users", json=body, headers=h.auth())
        assert response.status_code == 400, (body, response.text)
        problem = response.json()
        assert any(field in e["field"] for e in problem["errors"]) or field in problem["detail"], (
            body,
            problem,
        )
    response = await h.client.get(f"/orgs/{root}/users", headers=h.auth())
    assert response.json()["data"] == []
    response = await h.client.get(f"/orgs/{root}/users?sort=age", headers=h.auth())
    assert response.status_code == 400
    response = await h.client.get(f"/orgs/{root}/users?cursor=garbage", headers=h.auth())
    assert response.status_code == 400


async def test_list_sorts_filters_and_pages(h):
    root = h.root.org_id
    people = [
        ("carol@example.com", "Carol", "Adams", ["standard"]),
        ("alice@example.com", "alice", "Zed", ["read-only"]),
        ("bob@example.com", "Bob", "Young", ["standard"]),
        ("dave@other.org", "Dave", "Brown", []),
    ]
    for email, first, last, roles in people:
        response = await h.client.post(
            f"/orgs/{root}/users",
            json={"email": email, "first_name": first, "last_name": last, "roles": roles},
            headers=h.auth(),
        )
        assert response.status_code == 201, response.text

    async def walk(query: str) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            url = f"/orgs/{root}/users?limit=1&{query}" + (f"&cursor={cursor}" if cursor else "")
            response = await h.client.get(url, headers=h.auth())
            assert response.status_code == 200, response.text
            body = response.json()
            seen += [u["email"] for u in body["data"]]
            cursor = body["next_cursor"]
            if cursor is None:
                return seen

    assert await walk("sort=email") == sorted(p[0] for p in people)
    assert await walk("sort=first_name") == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@other.org",
    ]
    assert await walk("sort=last_name") == [
        "carol@example.com",
        "dave@other.org",
        "bob@example.com",
        "alice@example.com",
    ]
    assert await walk("role=standard") == ["bob@example.com", "carol@example.com"]
    assert await walk("email=EXAMPLE.COM&sort=first_name") == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    ]
    assert await walk("status=active") == []
    assert len(await walk("status=pending")) == 4


async def test_read_only_key_reads_but_cannot_write_and_role_changes_apply_next_request(h):
    root = h.root.org_id
    admin = await make_user(h, root, "admin@example.com", ["administrator"])
    reader = await make_user(h, root, "reader@example.com", ["read-only"])
    key = await user_key(h, root, reader)

    assert (await h.client.get(f"/orgs/{root}/users", headers=h.auth(key))).status_code == 200
    response = await h.client.post(
        f"/orgs/{root}/users", json={"email": "x@example.com"}, headers=h.auth(key)
    )
    assert response.status_code == 403
    assert "manageUsersAndRoles" in response.json()["detail"]
    response = await h.client.post(
        f"/orgs/{root}/children", json={"name": "Nope"}, headers=h.auth(key)
    )
    assert response.status_code == 403
    assert "createOrganizations" in response.json()["detail"]

    # Promote: the very next request may write.
    response = await h.client.patch(
        f"/orgs/{root}/users/{reader}", json={"roles": ["administrator"]}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    response = await h.client.post(
        f"/orgs/{root}/users", json={"email": "x@example.com"}, headers=h.auth(key)
    )
    assert response.status_code == 201, response.text
    # Demote again: revoked on the very next request.
    response = await h.client.delete(
        f"/orgs/{root}/roles/administrator/users/{reader}", headers=h.auth()
    )
    assert response.status_code == 204, response.text
    response = await h.client.post(
        f"/orgs/{root}/users", json={"email": "y@example.com"}, headers=h.auth(key)
    )
    assert response.status_code == 403
    # The key's scopes still bound it: a read-only-scoped key of an admin cannot write.
    admin_reader = await user_key(h, root, admin, ["users:read"])
    response = await h.client.post(
        f"/orgs/{root}/users", json={"email": "z@example.com"}, headers=h.auth(admin_reader)
    )
    assert response.status_code == 403
    assert "users:write" in response.json()["detail"]


async def test_a_standard_user_creates_children_but_cannot_delete_them(h):
    root = h.root.org_id
    await make_user(h, root, "owner@example.com", ["owner"])
    standard = await make_user(h, root, "std@example.com", ["standard"])
    key = await user_key(h, root, standard)
    child = await h.create_org(root, "Made by standard", key=key)
    response = await h.client.delete(f"/orgs/{child['id']}", headers=h.auth(key))
    assert response.status_code == 403
    assert "deactivateOrganizations" in response.json()["detail"]
    response = await h.client.get(f"/orgs/{child['id']}", headers=h.auth(key))
    assert response.status_code == 200 and response.json()["deleted_at"] is None
    # Nor mint a key that escapes its roles, nor bind one to the owner.
    response = await h.client.post(
        f"/orgs/{root}/api_keys", json={"name": "k", "scopes": ["orgs:read"]}, headers=h.auth(key)
    )
    assert response.status_code == 403  # standard lacks manageApiKeys


async def test_the_last_owner_or_administrator_cannot_be_removed_or_demoted(h):
    root = h.root.org_id
    owner = await make_user(h, root, "owner@example.com", ["owner"])
    for method, path, body in [
        ("DELETE", f"/orgs/{root}/users/{owner}", None),
        ("PATCH", f"/orgs/{root}/users/{owner}", {"roles": ["standard"]}),
        ("DELETE", f"/orgs/{root}/roles/owner/users/{owner}", None),
        ("POST", f"/orgs/{root}/users/{owner}/disable", None),
    ]:
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        response = await h.client.request(method, path, headers=h.auth(), **kwargs)
        assert response.status_code == 409, (method, path, response.text)
        assert "last owner or administrator" in response.json()["detail"]
    response = await h.client.get(f"/orgs/{root}/users/{owner}", headers=h.auth())
    assert response.json()["roles"] == ["owner"]
    assert response.json()["status"] == "active"

    admin = await make_user(h, root, "admin@example.com", ["administrator"])
    response = await h.client.delete(f"/orgs/{root}/users/{owner}", headers=h.auth())
    assert response.status_code == 204, response.text
    response = await h.client.patch(
        f"/orgs/{root}/users/{admin}", json={"roles": ["read-only"]}, headers=h.auth()
    )
    assert response.status_code == 409


async def test_removal_hands_bound_keys_to_transfer_to_or_revokes_them(h):
    root = h.root.org_id
    await make_user(h, root, "owner@example.com", ["owner"])
    leaver = await make_user(h, root, "leaver@example.com", ["administrator"])
    heir = await make_user(h, root, "heir@example.com", ["read-only"])
    key = await user_key(h, root, leaver)
    assert (await h.client.get(f"/orgs/{root}/users", headers=h.auth(key))).status_code == 200

    response = await h.client.delete(
        f"/orgs/{root}/users/{leaver}?transfer_to=usr_nobody", headers=h.auth()
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "query.transfer_to"
    response = await h.client.delete(
        f"/orgs/{root}/users/{leaver}?transfer_to={heir}", headers=h.auth()
    )
    assert response.status_code == 204, response.text
    keys = (await h.client.get(f"/orgs/{root}/api_keys", headers=h.auth())).json()["data"]
    assert [k["user_id"] for k in keys if k["user_id"]] == [heir]
    # The key now acts as the heir, with the heir's (read-only) capabilities, at once.
    assert (await h.client.get(f"/orgs/{root}/users", headers=h.auth(key))).status_code == 200
    response = await h.client.post(
        f"/orgs/{root}/users", json={"email": "n@example.com"}, headers=h.auth(key)
    )
    assert response.status_code == 403

    # Without transfer_to, the heir's keys are revoked with the membership.
    response = await h.client.delete(f"/orgs/{root}/users/{heir}", headers=h.auth())
    assert response.status_code == 204, response.text
    assert (await h.client.get(f"/orgs/{root}", headers=h.auth(key))).status_code == 401


async def test_disabled_users_keys_stop_until_enabled(h):
    root = h.root.org_id
    await make_user(h, root, "owner@example.com", ["owner"])
    user = await make_user(h, root, "u@example.com", ["standard"])
    key = await user_key(h, root, user)
    response = await h.client.post(f"/orgs/{root}/users/{user}/disable", headers=h.auth())
    assert response.status_code == 200 and response.json()["status"] == "disabled"
    assert (await h.client.get(f"/orgs/{root}", headers=h.auth(key))).status_code == 401
    response = await h.client.post(f"/orgs/{root}/users/{user}/enable", headers=h.auth())
    assert response.json()["status"] == "active"
    assert (await h.client.get(f"/orgs/{root}", headers=h.auth(key))).status_code == 200


async def test_profile_of_a_user_in_other_trees_cannot_be_changed_from_a_subtree(h):
    root = h.root.org_id
    child = (await h.create_org(root, "Child"))["id"]
    child_key = await h.create_key(child, ["*"])
    user = await make_user(h, root, "shared@example.com", ["owner"])
    response = await h.client.post(
        f"/orgs/{child}/users",
        json={"email": "shared@example.com", "roles": ["standard"]},
        headers=h.auth(child_key),
    )
    assert response.status_code == 201
    response = await h.client.patch(
        f"/orgs/{child}/users/{user}", json={"first_name": "Mallory"}, headers=h.auth(child_key)
    )
    assert response.status_code == 403
    response = await h.client.post(f"/orgs/{child}/users/{user}/disable", headers=h.auth(child_key))
    assert response.status_code == 403
    # Its roles here are the child's to change.
    response = await h.client.patch(
        f"/orgs/{child}/users/{user}", json={"roles": ["read-only"]}, headers=h.auth(child_key)
    )
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == ["read-only"]


async def test_invitation_life_cycle_expiry_revocation_resend(h):
    root = h.root.org_id
    first = await invite(h, root, "late@example.com", ["standard"])
    assert first["status"] == "pending"

    async def expire(tx: Tx) -> None:
        await tx.execute(
            sa.update(invitations)
            .where(invitations.c.public_id == first["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    await h.services.db.transaction(expire)
    response = await h.client.post(
        f"/invitations/{first['token']}/accept", json={"password": PASSWORD}
    )
    assert response.status_code == 410
    assert "expired" in response.json()["detail"]

    # Resend: a new token works, the old one is void.
    response = await h.client.post(
        f"/orgs/{root}/invitations/{first['id']}/resend", headers=h.auth()
    )
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["token"] != first["token"] and second["status"] == "pending"
    response = await h.client.post(
        f"/invitations/{first['token']}/accept", json={"password": PASSWORD}
    )
    assert response.status_code == 404
    response = await h.client.post(
        f"/invitations/{second['token']}/accept", json={"password": "short"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "password"
    response = await h.client.post(f"/invitations/{second['token']}/accept", json={})
    assert response.status_code == 400
    response = await h.client.post(
        f"/invitations/{second['token']}/accept", json={"password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == ["standard"]
    response = await h.client.post(
        f"/invitations/{second['token']}/accept", json={"password": PASSWORD}
    )
    assert response.status_code == 409
    response = await h.client.delete(f"/orgs/{root}/invitations/{first['id']}", headers=h.auth())
    assert response.status_code == 409

    # Revoked: 410.
    third = await invite(h, root, "never@example.com", [])
    response = await h.client.delete(f"/orgs/{root}/invitations/{third['id']}", headers=h.auth())
    assert response.status_code == 204
    response = await h.client.post(
        f"/invitations/{third['token']}/accept", json={"password": PASSWORD}
    )
    assert response.status_code == 410
    async with h.services.db.read() as conn:
        hashes = list((await conn.execute(sa.select(invitations.c.token_hash))).scalars())
    assert third["token"] not in hashes and all(len(x) == 64 for x in hashes)
    assert await actions(h, first["id"]) == [
        "invitation.created",
        "invitation.resent",
        "invitation.accepted",
    ]
    assert await actions(h, third["id"]) == ["invitation.created", "invitation.revoked"]


def test_one_rule_splits_a_display_name_for_every_dialect() -> None:
    from orgplane.core.people.users import profile_from_full_name

    assert profile_from_full_name("Mary Ann Smith") == {
        "first_name": "Mary Ann",
        "last_name": "Smith",
    }
    assert profile_from_full_name("  Jane ") == {"first_name": "Jane", "last_name": ""}
    assert profile_from_full_name(None) == {} and profile_from_full_name("  ") == {}
