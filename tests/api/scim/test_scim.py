"""SCIM 2.0 at /scim/v2: discovery, Users, Groups (roles), errors, and scim2-tester."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, overload

import httpx
from scim2_client import BaseSyncSCIMClient
from scim2_models import Mutability, Resource, Schema, ScimProvider
from scim2_tester import Status, check_server

from support.harness import Harness

SCIM = "application/scim+json"


def scim_headers(h: Harness, key: str | None = None) -> dict[str, str]:
    return {**h.auth(key), "Content-Type": SCIM, "Accept": SCIM}


async def create_user(h: Harness, email: str, key: str | None = None, **fields: Any) -> Any:
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": email,
        **fields,
    }
    return await h.client.post("/scim/v2/Users", json=body, headers=scim_headers(h, key))


async def test_discovery(h: Harness) -> None:
    r = await h.client.get("/scim/v2/ServiceProviderConfig", headers=scim_headers(h))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(SCIM)
    body = r.json()
    assert body["patch"]["supported"] is True
    assert body["filter"]["supported"] is True
    r = await h.client.get("/scim/v2/ResourceTypes", headers=scim_headers(h))
    assert r.status_code == 200
    names = {rt["name"] for rt in r.json()["Resources"]}
    assert names == {"User", "Group"}
    r = await h.client.get("/scim/v2/ResourceTypes/User", headers=scim_headers(h))
    assert r.json()["endpoint"] == "/Users"
    r = await h.client.get("/scim/v2/Schemas", headers=scim_headers(h))
    ids = {s["id"] for s in r.json()["Resources"]}
    assert "urn:ietf:params:scim:schemas:core:2.0:User" in ids
    r = await h.client.get(
        "/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group", headers=scim_headers(h)
    )
    assert r.status_code == 200 and r.json()["name"] == "Group"
    for path in ("/scim/v2/Schemas/urn:nope", "/scim/v2/ResourceTypes/Nope"):
        r = await h.client.get(path, headers=scim_headers(h))
        assert r.status_code == 404
        assert r.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


async def test_user_lifecycle(h: Harness) -> None:
    r = await create_user(
        h,
        "ada@example.com",
        name={"givenName": "Ada", "familyName": "Lovelace"},
        title="Countess",
    )
    assert r.status_code == 201, r.text
    user = r.json()
    uid = user["id"]
    assert user["userName"] == "ada@example.com"
    assert user["active"] is True
    assert user["name"] == {"givenName": "Ada", "familyName": "Lovelace"} | user["name"]
    assert r.headers["location"].endswith(f"/scim/v2/Users/{uid}")
    # the native API sees the same member, pending until the invitation is accepted
    native = await h.client.get(f"/orgs/{h.root.org_id}/users/{uid}", headers=h.auth())
    assert native.json()["first_name"] == "Ada" and native.json()["status"] == "pending"

    r = await h.client.get(f"/scim/v2/Users/{uid}", headers=scim_headers(h))
    assert r.status_code == 200 and r.json()["title"] == "Countess"

    replaced = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "ada@example.com",
        "name": {"givenName": "Augusta", "familyName": "King"},
        "title": "Analyst",
        "active": True,
    }
    r = await h.client.put(f"/scim/v2/Users/{uid}", json=replaced, headers=scim_headers(h))
    assert r.status_code == 200, r.text
    assert r.json()["name"]["givenName"] == "Augusta" and r.json()["title"] == "Analyst"

    # userName is the email, changed only through the native email-change flow
    r = await h.client.put(
        f"/scim/v2/Users/{uid}",
        json={**replaced, "userName": "other@example.com"},
        headers=scim_headers(h),
    )
    assert r.status_code == 400 and r.json()["scimType"] == "mutability"

    op = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "replace", "path": "name.familyName", "value": "Byron"},
            {"op": "replace", "path": "active", "value": False},
            {"op": "remove", "path": "title"},
        ],
    }
    r = await h.client.patch(f"/scim/v2/Users/{uid}", json=op, headers=scim_headers(h))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"]["familyName"] == "Byron" and body["active"] is False
    assert "title" not in body
    native = await h.client.get(f"/orgs/{h.root.org_id}/users/{uid}", headers=h.auth())
    assert native.json()["status"] == "disabled" and native.json()["last_name"] == "Byron"

    op = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "value": {"active": True, "title": "Poet"}}],
    }
    r = await h.client.patch(f"/scim/v2/Users/{uid}", json=op, headers=scim_headers(h))
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True and r.json()["title"] == "Poet"

    # every change is in the audit trail
    audit = await h.client.get(f"/orgs/{h.root.org_id}/audit", headers=h.auth())
    if audit.status_code == 200:
        actions = {e["action"] for e in audit.json()["data"]}
        assert {"user.created", "user.updated", "user.disabled"} <= actions

    r = await h.client.delete(f"/scim/v2/Users/{uid}", headers=scim_headers(h))
    assert r.status_code == 204
    r = await h.client.get(f"/scim/v2/Users/{uid}", headers=scim_headers(h))
    assert r.status_code == 404
    assert r.json()["status"] == "404"


async def test_user_list_filter_sort_page(h: Harness) -> None:
    for i, (given, family) in enumerate(
        [("Cy", "Alpha"), ("Al", "Delta"), ("Bo", "Charlie"), ("Di", "Bravo")]
    ):
        r = await create_user(
            h, f"u{i}@example.com", name={"givenName": given, "familyName": family}
        )
        assert r.status_code == 201, r.text
    ids = {}
    r = await h.client.get("/scim/v2/Users", headers=scim_headers(h))
    for u in r.json()["Resources"]:
        ids[u["userName"]] = u["id"]
    total = r.json()["totalResults"]
    assert total >= 4  # plus the root's own members, if any

    async def query(**params: Any) -> Any:
        r = await h.client.get("/scim/v2/Users", params=params, headers=scim_headers(h))
        assert r.status_code == 200, r.text
        return r.json()

    body = await query(filter='userName eq "U2@example.com"')
    assert [u["userName"] for u in body["Resources"]] == ["u2@example.com"]
    assert body["totalResults"] == 1
    body = await query(filter='emails.value eq "u1@example.com"')
    assert [u["userName"] for u in body["Resources"]] == ["u1@example.com"]
    body = await query(filter='userName eq "u1@example.com" or userName eq "u3@example.com"')
    assert sorted(u["userName"] for u in body["Resources"]) == [
        "u1@example.com",
        "u3@example.com",
    ]
    body = await query(filter='userName sw "u" and name.givenName eq "Bo"')
    assert [u["userName"] for u in body["Resources"]] == ["u2@example.com"]

    await h.client.patch(
        f"/scim/v2/Users/{ids['u0@example.com']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        },
        headers=scim_headers(h),
    )
    body = await query(filter="active eq false")
    assert [u["userName"] for u in body["Resources"]] == ["u0@example.com"]

    body = await query(filter='userName sw "u"', sortBy="name.familyName")
    assert [u["name"]["familyName"] for u in body["Resources"]] == [
        "Alpha",
        "Bravo",
        "Charlie",
        "Delta",
    ]
    body = await query(filter='userName sw "u"', sortBy="name.givenName", sortOrder="descending")
    assert [u["name"]["givenName"] for u in body["Resources"]] == ["Di", "Cy", "Bo", "Al"]
    body = await query(filter='userName sw "u"', sortBy="userName", startIndex=2, count=2)
    assert body["totalResults"] == 4 and body["startIndex"] == 2 and body["itemsPerPage"] == 2
    assert [u["userName"] for u in body["Resources"]] == ["u1@example.com", "u2@example.com"]
    body = await query(filter='userName sw "u"', count=0)
    assert body["totalResults"] == 4 and body["Resources"] == []


async def test_searches_in_a_body_and_lists_of_users_and_groups_sorted_by_a_user_attribute(
    h: Harness,
) -> None:
    """A group has no userName: sorted by it, groups come as if it were empty (first when
    ascending), in a list of groups and in a search over users and groups alike."""
    for email in ("b@example.com", "a@example.com"):
        assert (await create_user(h, email)).status_code == 201
    groups = await h.client.get(
        "/scim/v2/Groups",
        params={"sortBy": "userName", "sortOrder": "descending"},
        headers=scim_headers(h),
    )
    assert groups.status_code == 200, groups.text
    roles = groups.json()["totalResults"]
    both = await h.client.post(
        "/scim/v2/.search",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "sortBy": "userName",
        },
        headers=scim_headers(h),
    )
    assert both.status_code == 200, both.text
    names = [r.get("userName") for r in both.json()["Resources"]]
    assert names == [None] * roles + ["a@example.com", "b@example.com"]
    users = await h.client.post(
        "/scim/v2/Users/.search",
        json={"filter": 'userName ew "@example.com"', "startIndex": 2, "count": 1},
        headers=scim_headers(h),
    )
    assert users.status_code == 200, users.text
    assert users.json()["totalResults"] == 2 and users.json()["startIndex"] == 2
    assert [u["userName"] for u in users.json()["Resources"]] == ["b@example.com"]


async def test_list_parameters_are_typed_and_read_after_the_key(h: Harness) -> None:
    anonymous = await h.client.get("/scim/v2/Users", params={"count": "many"})
    assert anonymous.status_code == 401, anonymous.text
    for params in ({"count": "many"}, {"startIndex": "1.5"}):
        r = await h.client.get("/scim/v2/Groups", params=params, headers=scim_headers(h))
        assert r.status_code == 400, r.text
        assert r.json()["scimType"] == "invalidValue"
        assert r.json()["detail"].startswith(f"query.{next(iter(params))}: "), r.text
    r = await h.client.post(
        "/scim/v2/.search", json={"attributes": "userName"}, headers=scim_headers(h)
    )
    assert r.status_code == 400 and r.json()["detail"].startswith("attributes: "), r.text
    r = await h.client.post("/scim/v2/.search", content=b"{", headers=scim_headers(h))
    assert r.status_code == 400 and r.json()["scimType"] == "invalidSyntax", r.text


async def test_groups_are_roles(h: Harness) -> None:
    uid = (await create_user(h, "grace@example.com")).json()["id"]
    r = await h.client.get("/scim/v2/Groups", headers=scim_headers(h))
    assert r.status_code == 200, r.text
    names = {g["id"]: g["displayName"] for g in r.json()["Resources"]}
    assert {"owner", "administrator", "standard", "read-only"} <= set(names)

    add = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": uid}]}],
    }
    r = await h.client.patch("/scim/v2/Groups/standard", json=add, headers=scim_headers(h))
    assert r.status_code == 200, r.text
    assert uid in [m["value"] for m in r.json()["members"]]
    native = await h.client.get(f"/orgs/{h.root.org_id}/users/{uid}", headers=h.auth())
    assert native.json()["roles"] == ["standard"]
    r = await h.client.get(f"/scim/v2/Users/{uid}", headers=scim_headers(h))
    assert [g["value"] for g in r.json()["groups"]] == ["standard"]

    remove = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": f'members[value eq "{uid}"]'}],
    }
    r = await h.client.patch("/scim/v2/Groups/standard", json=remove, headers=scim_headers(h))
    assert r.status_code == 200, r.text
    assert uid not in [m["value"] for m in r.json().get("members", [])]

    # custom roles: create with members, filter, rename, delete
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Auditors",
        "members": [{"value": uid}],
    }
    r = await h.client.post("/scim/v2/Groups", json=body, headers=scim_headers(h))
    assert r.status_code == 201, r.text
    gid = r.json()["id"]
    assert [m["value"] for m in r.json()["members"]] == [uid]
    r = await h.client.post("/scim/v2/Groups", json=body, headers=scim_headers(h))
    assert r.status_code == 409 and r.json()["scimType"] == "uniqueness"
    r = await h.client.get(
        "/scim/v2/Groups", params={"filter": 'displayName eq "auditors"'}, headers=scim_headers(h)
    )
    assert [g["id"] for g in r.json()["Resources"]] == [gid]
    r = await h.client.put(
        f"/scim/v2/Groups/{gid}",
        json={**body, "displayName": "Reviewers", "members": []},
        headers=scim_headers(h),
    )
    assert r.status_code == 200, r.text
    assert r.json()["displayName"] == "Reviewers" and not r.json().get("members")
    r = await h.client.delete(f"/scim/v2/Groups/{gid}", headers=scim_headers(h))
    assert r.status_code == 204
    r = await h.client.get(f"/scim/v2/Groups/{gid}", headers=scim_headers(h))
    assert r.status_code == 404
    # system roles cannot be renamed or deleted
    r = await h.client.delete("/scim/v2/Groups/owner", headers=scim_headers(h))
    assert r.status_code == 409 and r.json()["status"] == "409"


async def test_errors(h: Harness) -> None:
    r = await h.client.get("/scim/v2/Users")
    assert r.status_code == 401
    assert r.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    r = await h.client.get("/scim/v2/Users", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401

    reader = await h.create_key(h.root.org_id, ["users:read"])
    r = await h.client.get("/scim/v2/Users", headers=scim_headers(h, reader))
    assert r.status_code == 200
    r = await create_user(h, "x@example.com", key=reader)
    assert r.status_code == 403 and r.json()["status"] == "403"
    other = await h.create_key(h.root.org_id, ["orgs:read"])
    r = await h.client.get("/scim/v2/Users", headers=scim_headers(h, other))
    assert r.status_code == 403

    r = await h.client.get("/scim/v2/Users/usr_missing", headers=scim_headers(h))
    assert r.status_code == 404 and r.json()["detail"]
    r = await h.client.get("/scim/v2/Groups/rol_missing", headers=scim_headers(h))
    assert r.status_code == 404

    assert (await create_user(h, "dup@example.com")).status_code == 201
    r = await create_user(h, "DUP@example.com")
    assert r.status_code == 409 and r.json()["scimType"] == "uniqueness"

    for bad in ("userName eq", "userName xx 1", '(userName eq "a"'):
        r = await h.client.get("/scim/v2/Users", params={"filter": bad}, headers=scim_headers(h))
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["scimType"] == "invalidFilter"
    r = await create_user(h, "not an email")
    assert r.status_code == 400
    r = await h.client.post("/scim/v2/Users", content=b"{", headers=scim_headers(h))
    assert r.status_code == 400
    r = await h.client.patch(
        "/scim/v2/Users/usr_missing",
        json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": []},
        headers=scim_headers(h),
    )
    assert r.status_code in (400, 404)
    # plain JSON is accepted too
    r = await h.client.post(
        "/scim/v2/Users",
        json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "j@x.io"},
        headers={**h.auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 201, r.text


class BridgedClient(BaseSyncSCIMClient):
    """A sync SCIM client (what scim2-tester drives) whose requests run on the test's event
    loop through the harness's ASGI client: the app and its database stay on that loop."""

    def __init__(self, h: Harness, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.h = h
        self.loop = loop

    def _stays_under_base_url(self, endpoint: str) -> bool:
        return not endpoint.startswith(("http://", "https://")) or endpoint.startswith(
            "http://orgplane.test/scim/v2"
        )

    def _parse_json(self, response: Any) -> Any:
        return response.json()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if not url.startswith("http"):
            url = "/scim/v2" + (url if url.startswith("/") else "/" + url)
        headers = {**scim_headers(self.h), **(kwargs.pop("headers", None) or {})}
        coro = self.h.client.request(method, url, headers=headers, **kwargs)
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)


class FreshEmails(Sequence[str]):
    """What scim2-tester draws a field's values from (``random.choice`` over its examples):
    a new address on every draw, so created users never collide."""

    def __len__(self) -> int:
        return 1_000_000

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return f"{uuid.uuid4().hex}@scim.example.com"


async def published_model(h: Harness, name: str) -> type[Resource[Any]]:
    """The model the server publishes (GET /Schemas/...), with what a schema cannot say:
    externalId, a common attribute every resource model carries, is not stored by orgplane
    (so it is read-only here); and a User's userName is an email address, orgplane's identity
    (so the tester fills it with fresh addresses rather than words)."""
    r = await h.client.get(
        f"/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:{name}", headers=scim_headers(h)
    )
    assert r.status_code == 200, r.text
    model = Resource.from_schema(Schema.model_validate(r.json()))
    field = model.model_fields["external_id"]
    field.metadata[:] = [Mutability.read_only] + [
        m for m in field.metadata if not isinstance(m, Mutability)
    ]
    if name == "User":
        model.model_fields["user_name"].examples = FreshEmails()  # type: ignore[assignment]
    return model


async def test_scim2_tester(h: Harness) -> None:
    models = [await published_model(h, "User"), await published_model(h, "Group")]
    client = BridgedClient(h, asyncio.get_running_loop(), provider=ScimProvider(models))
    results = await asyncio.to_thread(check_server, client)
    failed = [r for r in results if r.status not in (Status.SUCCESS, Status.SKIPPED)]
    # every family of checks ran, for both resource types: discovery, CRUD, PATCH, misc
    assert {r.resource_type for r in results} >= {"User", "Group"}
    tags = set().union(*(r.tags for r in results))
    assert {"discovery", "crud:create", "crud:read", "crud:update", "crud:delete"} <= tags
    assert sum(r.status == Status.SUCCESS for r in results) > 40
    assert not failed, "\n".join(f"{r.title}: {r.status} {r.reason}" for r in failed)
