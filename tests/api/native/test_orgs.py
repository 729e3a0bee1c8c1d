"""The native organization endpoints, end to end through the ASGI app, on SQLite and PostgreSQL.

Covers the 401/403/404/valid matrix of every org endpoint, ETag/If-Match, idempotent create,
delete/restore, moves, the listings, bad input, and the audit entries every write leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from orgplane.core.audit import service as audit_service
from orgplane.core.bootstrap import create_root_with_admin_key
from orgplane.core.ids import new_native_key
from orgplane.models import audit_log, orgs
from support.harness import Harness, start_harness, stop_harness

NONEXISTENT = "zzzzzzzzzzzz"
PROBLEM = "application/problem+json"


# --- helpers -------------------------------------------------------------------------------


def problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """Assert an RFC 9457 problem document with ``status`` (naming ``field`` when given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if field is not None:
        fields = [e["field"] for e in body.get("errors", [])]
        assert field in fields, body
    return body


async def counts(h: Harness) -> tuple[int, int]:
    """How many org rows and audit rows exist: what a refused request must leave unchanged."""
    async with h.services.db.read() as conn:
        n_orgs = (await conn.execute(sa.select(sa.func.count()).select_from(orgs))).scalar_one()
        n_audit = (
            await conn.execute(sa.select(sa.func.count()).select_from(audit_log))
        ).scalar_one()
    return int(n_orgs), int(n_audit)


async def get_org(h: Harness, org_id: str, key: str | None = None) -> httpx.Response:
    return await h.client.get(f"/orgs/{org_id}", headers=h.auth(key))


async def child_ids(h: Harness, org_id: str, key: str | None = None, **params: Any) -> list[str]:
    response = await h.client.get(
        f"/orgs/{org_id}/children", params={"limit": 1000, **params}, headers=h.auth(key)
    )
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return [o["id"] for o in response.json()["data"]]


async def descendants(h: Harness, org_id: str, **params: Any) -> list[dict[str, Any]]:
    response = await h.client.get(
        f"/orgs/{org_id}/descendants", params={"limit": 1000, **params}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def audit_entries(h: Harness, org_id: str) -> list[dict[str, Any]]:
    response = await h.client.get(f"/orgs/{org_id}/audit", headers=h.auth())
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def assert_tree_consistent(h: Harness) -> None:
    """Every row's path, depth and root agree with its parent's."""
    async with h.services.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(orgs.c.id, orgs.c.parent_id, orgs.c.root_id, orgs.c.path, orgs.c.depth)
            )
        ).all()
    by_id = {r.id: r for r in rows}
    for r in rows:
        if r.parent_id is None:
            assert (r.path, r.depth, r.root_id) == (f"/{r.id}/", 0, r.id)
        else:
            parent = by_id[r.parent_id]
            assert r.path == f"{parent.path}{r.id}/"
            assert r.depth == parent.depth + 1
            assert r.root_id == parent.root_id


async def create_key_with_id(h: Harness, org: str, scopes: list[str]) -> tuple[str, str]:
    response = await h.client.post(
        f"/orgs/{org}/api_keys", json={"name": "k", "scopes": scopes}, headers=h.auth()
    )
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["api_key"]


# --- the reach matrix ----------------------------------------------------------------------


@dataclass
class World:
    """Root → A → {B, C}; Root → Sibling; and a stranger tree. Keys belong to A."""

    root: str
    a: str
    b: str
    c: str
    sibling: str
    stranger: str
    key: str  # every scope
    read_key: str  # orgs:read
    keys_key: str  # keys:read only
    revoked_key: str


async def build_world(h: Harness) -> World:
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    b = (await h.create_org(a, "B"))["id"]
    c = (await h.create_org(a, "C"))["id"]
    sibling = (await h.create_org(root, "Sibling"))["id"]
    other = await h.services.db.transaction(create_root_with_admin_key, name="Other")
    key = await h.create_key(a, ["*"])
    read_key = await h.create_key(a, ["orgs:read"])
    keys_key = await h.create_key(a, ["keys:read"])
    revoked_id, revoked_key = await create_key_with_id(h, a, ["*"])
    assert (await get_org(h, b, revoked_key)).status_code == 200  # cached as valid first
    response = await h.client.delete(f"/orgs/{a}/api_keys/{revoked_id}", headers=h.auth())
    assert response.status_code == 204, response.text
    return World(
        root, a, b, c, sibling, other.org_id, key, read_key, keys_key, revoked_key=revoked_key
    )


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    write: bool
    body: Callable[[World], dict[str, Any]] | None = None


ENDPOINTS = [
    Endpoint("get", "GET", "/orgs/{id}", write=False),
    Endpoint("patch", "PATCH", "/orgs/{id}", write=True, body=lambda w: {"description": "x"}),
    Endpoint("delete", "DELETE", "/orgs/{id}", write=True),
    Endpoint("restore", "POST", "/orgs/{id}/restore", write=True),
    Endpoint("create_child", "POST", "/orgs/{id}/children", True, lambda w: {"name": "New"}),
    Endpoint("list_children", "GET", "/orgs/{id}/children", write=False),
    Endpoint("list_descendants", "GET", "/orgs/{id}/descendants", write=False),
    Endpoint("move", "POST", "/orgs/{id}/move", write=True, body=lambda w: {"parent_id": w.c}),
]


async def send(
    h: Harness, ep: Endpoint, w: World, target: str, headers: dict[str, str]
) -> httpx.Response:
    body = ep.body(w) if ep.body else None
    return await h.client.request(ep.method, ep.path.format(id=target), json=body, headers=headers)


def comparable_404(body: dict[str, Any], target: str) -> dict[str, Any]:
    """The parts of a 404 that must not depend on why the org is out of reach."""
    out = {k: v for k, v in body.items() if k not in ("instance", "request_id")}
    out["detail"] = out["detail"].replace(target, "<id>")
    return out


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
async def test_reach_matrix_401_404_403(h: Harness, ep: Endpoint) -> None:
    w = await build_world(h)
    before = await counts(h)

    # 401: no header, malformed keys, an unknown well-formed key, a revoked key.
    bad_credentials = {
        "no header": {},
        "empty bearer": {"Authorization": "Bearer "},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "bad checksum": {
            "Authorization": "Bearer " + w.key[:-1] + ("A" if w.key[-1] != "A" else "B")
        },
        "wrong scheme": {"Authorization": f"Basic {w.key}"},
        "unknown": {"Authorization": f"Bearer {new_native_key()}"},
        "revoked": {"Authorization": f"Bearer {w.revoked_key}"},
    }
    invalid_details = set()
    for label, headers in bad_credentials.items():
        response = await send(h, ep, w, w.b, headers)
        body = problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer"), label
        if label not in ("no header", "empty bearer", "wrong scheme"):
            invalid_details.add(body["detail"])
    # A bad key is a bad key: the answer does not say whether it exists or was revoked.
    assert len(invalid_details) == 1, invalid_details

    # 404: ancestor, sibling, stranger tree and nonexistent id all answer the same, also for a
    # key that lacks the scope (reach is decided before scope, so 403 never leaks existence).
    outside = {
        "ancestor": w.root,
        "sibling": w.sibling,
        "stranger": w.stranger,
        "nonexistent": NONEXISTENT,
    }
    weak_key = w.read_key if ep.write else w.keys_key
    seen = []
    for key in (w.key, weak_key):
        for label, target in outside.items():
            response = await send(h, ep, w, target, h.auth(key))
            body = problem(response, 404)
            assert target in body["detail"], label
            assert body["instance"] == ep.path.format(id=target)
            assert body["request_id"] == response.headers["x-request-id"]
            seen.append(comparable_404(body, target))
    assert all(s == seen[0] for s in seen), seen

    # 403: inside reach, without the scope.
    for target in (w.a, w.b):
        response = await send(h, ep, w, target, h.auth(weak_key))
        body = problem(response, 403)
        assert ("orgs:write" if ep.write else "orgs:read") in body["detail"]

    # None of the refused requests wrote anything.
    assert await counts(h) == before
    b = (await get_org(h, w.b)).json()
    assert (b["name"], b["description"], b["parent_id"], b["version"]) == ("B", "", w.a, 1)


# Valid calls of the same endpoints, by A's key on B (inside its reach), with their effects.


async def valid_get(h: Harness, w: World) -> None:
    response = await get_org(h, w.b, w.read_key)
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["name"], body["parent_id"], body["depth"]) == (w.b, "B", w.a, 2)
    assert body["status"] == "active" and body["deleted_at"] is None
    assert response.headers["etag"] == f'"{body["uuid"]}.{body["version"]}"'
    # Its own org is readable, but the parent (outside its reach) is not revealed.
    own = (await get_org(h, w.a, w.read_key)).json()
    assert own["id"] == w.a and own["parent_id"] is None
    assert (await get_org(h, w.a)).json()["parent_id"] == w.root


async def valid_patch(h: Harness, w: World) -> None:
    response = await h.client.patch(
        f"/orgs/{w.b}",
        json={"name": "  B2  ", "description": "d", "tags": ["team:x", "env:prod", "env:prod"]},
        headers=h.auth(w.key),
    )
    assert response.status_code == 200, response.text
    body = (await get_org(h, w.b)).json()
    assert body["name"] == "B2"
    assert body["description"] == "d"
    assert body["tags"] == ["env:prod", "team:x"]
    assert body["version"] == 2
    assert response.json() == body


async def valid_delete(h: Harness, w: World) -> None:
    response = await h.client.delete(f"/orgs/{w.b}", headers=h.auth(w.key))
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Organization deleted successfully"}
    problem(await get_org(h, w.b), 404)
    assert await child_ids(h, w.a) == [w.c]


async def valid_restore(h: Harness, w: World) -> None:
    assert (await h.client.delete(f"/orgs/{w.b}", headers=h.auth(w.key))).status_code == 200
    response = await h.client.post(f"/orgs/{w.b}/restore", headers=h.auth(w.key))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active" and response.json()["deleted_at"] is None
    assert (await get_org(h, w.b)).status_code == 200
    assert sorted(await child_ids(h, w.a)) == sorted([w.b, w.c])


async def valid_create_child(h: Harness, w: World) -> None:
    response = await h.client.post(
        f"/orgs/{w.b}/children",
        json={"name": "New", "country": "de", "tags": ["env:prod"], "plan": "pro"},
        headers=h.auth(w.key),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/orgs/{body['id']}"
    assert (body["parent_id"], body["depth"], body["country"]) == (w.b, 3, "DE")
    assert body["plan"] == "pro" and body["tags"] == ["env:prod"]
    assert body["deployment"] == "us1" and body["timezone"] == "UTC"  # inherited
    assert (await get_org(h, body["id"])).json() == body
    assert await child_ids(h, w.b) == [body["id"]]


async def valid_list_children(h: Harness, w: World) -> None:
    ids = await child_ids(h, w.a, w.read_key)
    assert sorted(ids) == sorted([w.b, w.c])
    assert await child_ids(h, w.b, w.read_key) == []


async def valid_list_descendants(h: Harness, w: World) -> None:
    grandchild = (await h.create_org(w.b, "G"))["id"]
    response = await h.client.get(f"/orgs/{w.a}/descendants", headers=h.auth(w.read_key))
    assert response.status_code == 200
    data = response.json()["data"]
    assert {o["id"] for o in data} == {w.b, w.c, grandchild}
    assert [o["id"] for o in data].index(grandchild) > [o["id"] for o in data].index(w.b)


async def valid_move(h: Harness, w: World) -> None:
    response = await h.client.post(
        f"/orgs/{w.b}/move", json={"parent_id": w.c}, headers=h.auth(w.key)
    )
    assert response.status_code == 200, response.text
    assert (response.json()["parent_id"], response.json()["depth"]) == (w.c, 3)
    body = (await get_org(h, w.b)).json()
    assert (body["parent_id"], body["depth"]) == (w.c, 3)
    assert await child_ids(h, w.a) == [w.c]
    assert await child_ids(h, w.c) == [w.b]
    await assert_tree_consistent(h)


VALID: dict[str, Callable[[Harness, World], Awaitable[None]]] = {
    "get": valid_get,
    "patch": valid_patch,
    "delete": valid_delete,
    "restore": valid_restore,
    "create_child": valid_create_child,
    "list_children": valid_list_children,
    "list_descendants": valid_list_descendants,
    "move": valid_move,
}


def test_every_endpoint_has_a_valid_case() -> None:
    assert set(VALID) == {ep.name for ep in ENDPOINTS}


@pytest.mark.parametrize("name", list(VALID))
async def test_valid_call_has_its_effect(h: Harness, name: str) -> None:
    w = await build_world(h)
    await VALID[name](h, w)


async def test_move_to_a_parent_outside_reach_is_404(h: Harness) -> None:
    w = await build_world(h)
    before = await counts(h)
    bodies = []
    for target in (w.root, w.sibling, w.stranger, NONEXISTENT):
        response = await h.client.post(
            f"/orgs/{w.b}/move", json={"parent_id": target}, headers=h.auth(w.key)
        )
        body = problem(response, 404)
        bodies.append(comparable_404(body, target))
    assert all(b == bodies[0] for b in bodies)
    assert await counts(h) == before
    assert (await get_org(h, w.b)).json()["parent_id"] == w.a


# --- ETag / If-Match -----------------------------------------------------------------------


async def test_etag_and_if_match(h: Harness) -> None:
    org = await h.create_org(h.root.org_id, "Tagged")
    path = f"/orgs/{org['id']}"
    first = await h.client.get(path, headers=h.auth())
    etag1 = first.headers["etag"]
    assert etag1 == f'"{org["uuid"]}.1"'
    # Reading again does not change it.
    assert (await h.client.get(path, headers=h.auth())).headers["etag"] == etag1

    changed = await h.client.patch(path, json={"name": "Second"}, headers=h.auth())
    assert changed.status_code == 200
    etag2 = changed.headers["etag"]
    assert etag2 != etag1
    assert (await h.client.get(path, headers=h.auth())).headers["etag"] == etag2

    # A stale If-Match is refused with the current ETag, and nothing changes.
    before = await counts(h)
    stale = await h.client.patch(
        path, json={"name": "Lost update"}, headers={**h.auth(), "If-Match": etag1}
    )
    body = problem(stale, 412)
    assert stale.headers["etag"] == etag2
    assert etag2 in body["detail"]
    assert await counts(h) == before
    current = (await h.client.get(path, headers=h.auth())).json()
    assert (current["name"], current["version"]) == ("Second", 2)

    # A weak or listed form of the current ETag matches.
    third = await h.client.patch(
        path, json={"name": "Third"}, headers={**h.auth(), "If-Match": f'"nope", W/{etag2}'}
    )
    assert third.status_code == 200, third.text
    etag3 = third.headers["etag"]
    assert etag3 not in (etag1, etag2)
    assert (await h.client.get(path, headers=h.auth())).headers["etag"] == etag3

    # The current ETag matches; then it is stale in turn.
    fourth = await h.client.patch(
        path, json={"description": "four"}, headers={**h.auth(), "If-Match": etag3}
    )
    assert fourth.status_code == 200
    problem(
        await h.client.patch(path, json={"name": "x"}, headers={**h.auth(), "If-Match": etag3}),
        412,
    )

    # `*` matches any version.
    star = await h.client.patch(path, json={"name": "Star"}, headers={**h.auth(), "If-Match": "*"})
    assert star.status_code == 200
    final = (await h.client.get(path, headers=h.auth())).json()
    assert (final["name"], final["description"], final["version"]) == ("Star", "four", 5)


async def test_if_match_on_move(h: Harness) -> None:
    root = h.root.org_id
    mover = await h.create_org(root, "Mover")
    target = await h.create_org(root, "Target")
    path = f"/orgs/{mover['id']}/move"
    stale = '"' + mover["uuid"] + '.0"'
    response = await h.client.post(
        path, json={"parent_id": target["id"]}, headers={**h.auth(), "If-Match": stale}
    )
    problem(response, 412)
    assert (await get_org(h, mover["id"])).json()["parent_id"] == root
    etag = (await get_org(h, mover["id"])).headers["etag"]
    response = await h.client.post(
        path, json={"parent_id": target["id"]}, headers={**h.auth(), "If-Match": etag}
    )
    assert response.status_code == 200, response.text
    assert response.headers["etag"] != etag
    assert (await get_org(h, mover["id"])).json()["parent_id"] == target["id"]


# --- idempotent create ---------------------------------------------------------------------


async def test_idempotent_create_replays_the_first_response(h: Harness) -> None:
    parent = (await h.create_org(h.root.org_id, "Parent"))["id"]
    headers = {**h.auth(), "Idempotency-Key": "create-once-1"}
    first = await h.client.post(f"/orgs/{parent}/children", json={"name": "Once"}, headers=headers)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    before = await counts(h)

    again = await h.client.post(f"/orgs/{parent}/children", json={"name": "Once"}, headers=headers)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await counts(h) == before
    assert await child_ids(h, parent) == [first.json()["id"]]

    # Same key, different body: refused, nothing written.
    other = await h.client.post(
        f"/orgs/{parent}/children", json={"name": "Different"}, headers=headers
    )
    problem(other, 422)
    assert await counts(h) == before

    # A different key creates another org; keys belong to the credential that sent them.
    other_key = await h.create_key(h.root.org_id, ["orgs:write"])
    third = await h.client.post(
        f"/orgs/{parent}/children",
        json={"name": "Once"},
        headers={**h.auth(other_key), "Idempotency-Key": "create-once-1"},
    )
    assert third.status_code == 201 and "idempotent-replayed" not in third.headers
    assert third.json()["id"] != first.json()["id"]
    assert len(await child_ids(h, parent)) == 2


async def test_a_failed_create_does_not_burn_its_idempotency_key(h: Harness) -> None:
    parent = (await h.create_org(h.root.org_id, "Parent"))["id"]
    headers = {**h.auth(), "Idempotency-Key": "retry-me"}
    bad = await h.client.post(
        f"/orgs/{parent}/children", json={"name": "X", "country": "nowhere"}, headers=headers
    )
    problem(bad, 400, "country")
    good = await h.client.post(
        f"/orgs/{parent}/children", json={"name": "X", "country": "fr"}, headers=headers
    )
    assert good.status_code == 201, good.text
    assert "idempotent-replayed" not in good.headers
    problem(
        await h.client.post(
            f"/orgs/{parent}/children",
            json={"name": "X"},
            headers={**h.auth(), "Idempotency-Key": ""},
        ),
        400,
    )


async def test_concurrent_duplicate_creates_make_one_child(h: Harness) -> None:
    parent = (await h.create_org(h.root.org_id, "Parent"))["id"]
    headers = {**h.auth(), "Idempotency-Key": "burst-1"}
    before = await counts(h)
    responses = await asyncio.gather(
        *(
            h.client.post(f"/orgs/{parent}/children", json={"name": "Burst"}, headers=headers)
            for _ in range(5)
        )
    )
    assert [r.status_code for r in responses] == [201] * 5, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    assert len(await child_ids(h, parent)) == 1
    n_orgs, n_audit = await counts(h)
    assert (n_orgs, n_audit) == (before[0] + 1, before[1] + 1)


# --- delete and restore --------------------------------------------------------------------


async def test_delete_leaf_and_cascade(h: Harness) -> None:
    root = h.root.org_id
    parent = (await h.create_org(root, "Parent"))["id"]
    kid = (await h.create_org(parent, "Kid"))["id"]
    grandkid = (await h.create_org(kid, "Grandkid"))["id"]

    before = await counts(h)
    refused = await h.client.delete(f"/orgs/{parent}", headers=h.auth())
    assert "2 descendant" in problem(refused, 409)["detail"]
    problem(await h.client.delete(f"/orgs/{parent}?cascade=false", headers=h.auth()), 409)
    assert await counts(h) == before
    assert (await get_org(h, parent)).status_code == 200

    response = await h.client.delete(f"/orgs/{parent}?cascade=true", headers=h.auth())
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Organization deleted successfully"}
    for gone in (parent, kid, grandkid):
        problem(await get_org(h, gone), 404)
    assert parent not in await child_ids(h, root)
    assert await child_ids(h, root, status="deleted") == [parent]
    assert await descendants(h, root) == []
    deleted = await h.client.get(f"/orgs/{parent}/children", headers=h.auth())
    problem(deleted, 404)
    # A deleted org cannot be deleted again, nor written.
    problem(await h.client.delete(f"/orgs/{parent}", headers=h.auth()), 404)
    problem(await h.client.patch(f"/orgs/{parent}", json={"name": "x"}, headers=h.auth()), 404)
    problem(
        await h.client.post(f"/orgs/{parent}/children", json={"name": "x"}, headers=h.auth()), 404
    )


async def test_restore_brings_back_what_was_deleted_with_it(h: Harness) -> None:
    root = h.root.org_id
    parent = (await h.create_org(root, "Parent"))["id"]
    with_it = (await h.create_org(parent, "WithIt"))["id"]
    below = (await h.create_org(with_it, "Below"))["id"]
    earlier = (await h.create_org(parent, "Earlier"))["id"]

    assert (await h.client.delete(f"/orgs/{earlier}", headers=h.auth())).status_code == 200
    assert (
        await h.client.delete(f"/orgs/{parent}?cascade=true", headers=h.auth())
    ).status_code == 200

    # A child deleted along with its parent cannot come back before the parent.
    before = await counts(h)
    blocked = await h.client.post(f"/orgs/{with_it}/restore", headers=h.auth())
    assert parent in problem(blocked, 409)["detail"]
    assert await counts(h) == before

    # Restoring a live org is a conflict.
    problem(await h.client.post(f"/orgs/{root}/restore", headers=h.auth()), 409)

    response = await h.client.post(f"/orgs/{parent}/restore", headers=h.auth())
    assert response.status_code == 200, response.text
    assert (response.json()["id"], response.json()["status"]) == (parent, "active")
    for back in (parent, with_it, below):
        assert (await get_org(h, back)).json()["deleted_at"] is None
    problem(await get_org(h, earlier), 404)
    assert await child_ids(h, parent) == [with_it]
    assert await child_ids(h, parent, status="deleted") == [earlier]
    assert [o["id"] for o in await descendants(h, parent)] == [with_it, below]

    # The earlier one comes back on its own.
    assert (await h.client.post(f"/orgs/{earlier}/restore", headers=h.auth())).status_code == 200
    assert sorted(await child_ids(h, parent)) == sorted([with_it, earlier])
    await assert_tree_consistent(h)


async def test_root_and_own_org_cannot_be_deleted(h: Harness) -> None:
    a = (await h.create_org(h.root.org_id, "A"))["id"]
    key = await h.create_key(a, ["orgs:write"])
    before = await counts(h)
    problem(await h.client.delete(f"/orgs/{h.root.org_id}", headers=h.auth()), 409)
    problem(await h.client.delete(f"/orgs/{h.root.org_id}?cascade=true", headers=h.auth()), 409)
    problem(await h.client.delete(f"/orgs/{a}", headers=h.auth(key)), 409)
    assert await counts(h) == before
    assert (await get_org(h, a, key)).status_code == 200


async def test_keys_of_deleted_orgs_stop_authenticating(h: Harness) -> None:
    a = (await h.create_org(h.root.org_id, "A"))["id"]
    b = (await h.create_org(a, "B"))["id"]
    key_a = await h.create_key(a, ["orgs:read"])
    key_b = await h.create_key(b, ["orgs:read"])
    # Both are used (and so cached) before the delete.
    assert (await get_org(h, a, key_a)).status_code == 200
    assert (await get_org(h, b, key_b)).status_code == 200

    assert (await h.client.delete(f"/orgs/{a}?cascade=true", headers=h.auth())).status_code == 200
    problem(await get_org(h, a, key_a), 401)
    problem(await get_org(h, b, key_b), 401)
    problem(await h.client.get(f"/orgs/{b}/children", headers=h.auth(key_b)), 401)

    assert (await h.client.post(f"/orgs/{a}/restore", headers=h.auth())).status_code == 200
    assert (await get_org(h, a, key_a)).status_code == 200
    assert (await get_org(h, b, key_b)).status_code == 200


# --- moves ---------------------------------------------------------------------------------


async def test_move_carries_the_whole_subtree(h: Harness) -> None:
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    a1 = (await h.create_org(a, "A1"))["id"]
    a2 = (await h.create_org(a1, "A2"))["id"]
    a3 = (await h.create_org(a2, "A3"))["id"]
    a2b = (await h.create_org(a1, "A2b"))["id"]
    b = (await h.create_org(root, "B"))["id"]
    b1 = (await h.create_org(b, "B1"))["id"]

    response = await h.client.post(f"/orgs/{a1}/move", json={"parent_id": b1}, headers=h.auth())
    assert response.status_code == 200, response.text
    expected = {a1: (b1, 3), a2: (a1, 4), a3: (a2, 5), a2b: (a1, 4)}
    for org_id, (parent_id, depth) in expected.items():
        body = (await get_org(h, org_id)).json()
        assert (body["parent_id"], body["depth"]) == (parent_id, depth), org_id
    moved = await descendants(h, b)
    assert {o["id"]: (o["parent_id"], o["depth"]) for o in moved} == {
        b1: (b, 2),
        **expected,
    }
    assert await descendants(h, a) == []
    assert await child_ids(h, b1) == [a1]
    await assert_tree_consistent(h)

    # The moved subtree is now reachable from B's keys and no longer from A's.
    key_a = await h.create_key(a, ["orgs:read"])
    key_b = await h.create_key(b, ["orgs:read"])
    problem(await get_org(h, a3, key_a), 404)
    assert (await get_org(h, a3, key_b)).status_code == 200

    # Moving back restores the original shape.
    back = await h.client.post(f"/orgs/{a1}/move", json={"parent_id": a}, headers=h.auth())
    assert back.status_code == 200
    assert {o["id"]: o["depth"] for o in await descendants(h, a)} == {
        a1: 2,
        a2: 3,
        a3: 4,
        a2b: 3,
    }
    await assert_tree_consistent(h)


async def test_move_refuses_cycles_own_org_and_root(h: Harness) -> None:
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    a1 = (await h.create_org(a, "A1"))["id"]
    a2 = (await h.create_org(a1, "A2"))["id"]
    other = (await h.create_org(root, "Other"))["id"]
    key_a = await h.create_key(a, ["orgs:write"])
    before = await counts(h)

    for new_parent in (a1, a2):  # itself, its grandchild
        response = await h.client.post(
            f"/orgs/{a1}/move", json={"parent_id": new_parent}, headers=h.auth()
        )
        assert "under itself" in problem(response, 409)["detail"]
    problem(await h.client.post(f"/orgs/{a}/move", json={"parent_id": a2}, headers=h.auth()), 409)
    # Its own org, even to a place inside its reach.
    problem(
        await h.client.post(f"/orgs/{a}/move", json={"parent_id": a2}, headers=h.auth(key_a)), 409
    )
    # The tenant root.
    problem(
        await h.client.post(f"/orgs/{root}/move", json={"parent_id": other}, headers=h.auth()),
        409,
    )
    # A deleted parent is not there.
    assert (await h.client.delete(f"/orgs/{other}", headers=h.auth())).status_code == 200
    before = await counts(h)
    problem(
        await h.client.post(f"/orgs/{a1}/move", json={"parent_id": other}, headers=h.auth()), 404
    )
    assert await counts(h) == before
    assert (await get_org(h, a1)).json()["parent_id"] == a
    assert (await get_org(h, a2)).json()["depth"] == 3
    await assert_tree_consistent(h)


async def test_depth_cap_on_move_and_create(db_url: str) -> None:
    h = await start_harness(db_url, max_tree_depth=3)
    try:
        root = h.root.org_id
        a = (await h.create_org(root, "A"))["id"]
        a1 = (await h.create_org(a, "A1"))["id"]
        b = (await h.create_org(root, "B"))["id"]
        b1 = (await h.create_org(b, "B1"))["id"]
        before = await counts(h)
        # Levels 0..2 are allowed: nothing under a depth-2 org.
        problem(
            await h.client.post(f"/orgs/{a1}/children", json={"name": "x"}, headers=h.auth()),
            409,
        )
        # B has a child: under A it would reach depth 3.
        refused = await h.client.post(f"/orgs/{b}/move", json={"parent_id": a}, headers=h.auth())
        assert "3 levels" in problem(refused, 409)["detail"]
        problem(
            await h.client.post(f"/orgs/{b1}/move", json={"parent_id": a1}, headers=h.auth()), 409
        )
        assert await counts(h) == before
        assert (await get_org(h, b)).json()["parent_id"] == root
        # A leaf fits under A (depth 2).
        fits = await h.client.post(f"/orgs/{b1}/move", json={"parent_id": a}, headers=h.auth())
        assert fits.status_code == 200, fits.text
        assert fits.json()["depth"] == 2
        await assert_tree_consistent(h)
    finally:
        await stop_harness(h)


# --- listings ------------------------------------------------------------------------------


async def test_children_keyset_pagination(h: Harness) -> None:
    parent = (await h.create_org(h.root.org_id, "Parent"))["id"]
    created = [(await h.create_org(parent, f"Child {i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await h.client.get(f"/orgs/{parent}/children", params=params, headers=h.auth())
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= 2
        seen += [o["id"] for o in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == created  # creation order, no duplicates, nothing missing

    # An exact multiple: the last full page says there is no more.
    response = await h.client.get(f"/orgs/{parent}/children", params={"limit": 5}, headers=h.auth())
    assert response.json()["next_cursor"] is None and len(response.json()["data"]) == 5

    # A cursor combined with a filter keeps the filter.
    page1 = (
        await h.client.get(
            f"/orgs/{parent}/children",
            params={"limit": 1, "filter[name]": "child"},
            headers=h.auth(),
        )
    ).json()
    page2 = (
        await h.client.get(
            f"/orgs/{parent}/children",
            params={"limit": 10, "filter[name]": "child", "cursor": page1["next_cursor"]},
            headers=h.auth(),
        )
    ).json()
    assert [o["id"] for o in page1["data"] + page2["data"]] == created


async def test_children_filters(h: Harness) -> None:
    parent = (await h.create_org(h.root.org_id, "Parent"))["id"]
    names = ["Alpha", "ALPHABET soup", "Beta", "100% Real", "a_b", "axb"]
    ids = {}
    for name in names:
        tags = ["env:prod"] if name == "Beta" else ["env:dev", "team:x"] if name == "axb" else []
        ids[name] = (await h.create_org(parent, name, tags=tags))["id"]

    async def named(text: str) -> set[str]:
        found = await child_ids(h, parent, **{"filter[name]": text})
        return {n for n, i in ids.items() if i in found}

    assert await named("alpha") == {"Alpha", "ALPHABET soup"}
    assert await named("SOUP") == {"ALPHABET soup"}
    assert await named("%") == {"100% Real"}
    assert await named("_") == {"a_b"}
    assert await named("a_b") == {"a_b"}
    assert await named("nothing") == set()

    async def tagged(tag: str) -> set[str]:
        found = await child_ids(h, parent, tag=tag)
        return {n for n, i in ids.items() if i in found}

    assert await tagged("env:prod") == {"Beta"}
    assert await tagged("team:x") == {"axb"}
    assert await tagged("env") == set()

    disabled = await h.client.patch(
        f"/orgs/{ids['Beta']}", json={"status": "disabled"}, headers=h.auth()
    )
    assert disabled.status_code == 200
    assert (await h.client.delete(f"/orgs/{ids['axb']}", headers=h.auth())).status_code == 200
    assert await child_ids(h, parent, status="disabled") == [ids["Beta"]]
    assert await child_ids(h, parent, status="deleted") == [ids["axb"]]
    active = set(await child_ids(h, parent, status="active"))
    assert active == {ids[n] for n in names} - {ids["Beta"], ids["axb"]}
    assert set(await child_ids(h, parent)) == active | {ids["Beta"]}
    problem(
        await h.client.get(f"/orgs/{parent}/children?status=bogus", headers=h.auth()),
        400,
        "query.status",
    )
    # Filters combine.
    assert await child_ids(h, parent, status="disabled", tag="env:prod") == [ids["Beta"]]
    assert await child_ids(h, parent, status="active", tag="env:prod") == []


async def test_bad_cursors_and_limits(h: Harness) -> None:
    parent = (await h.create_org(h.root.org_id, "Parent"))["id"]
    for i in range(3):
        await h.create_org(parent, f"C{i}")
    children_cursor = (
        await h.client.get(f"/orgs/{parent}/children?limit=1", headers=h.auth())
    ).json()["next_cursor"]
    descendants_cursor = (
        await h.client.get(f"/orgs/{parent}/descendants?limit=1", headers=h.auth())
    ).json()["next_cursor"]
    assert children_cursor and descendants_cursor
    for listing, wrong_cursor in (
        ("children", descendants_cursor),
        ("descendants", children_cursor),
    ):
        for cursor in ("abc", "!!!", "bnVsbA", "W3RydWVd", wrong_cursor):
            response = await h.client.get(
                f"/orgs/{parent}/{listing}", params={"cursor": cursor}, headers=h.auth()
            )
            problem(response, 400, "query.cursor")
        for limit in ("0", "5000", "-1", "x"):
            response = await h.client.get(
                f"/orgs/{parent}/{listing}", params={"limit": limit}, headers=h.auth()
            )
            problem(response, 400, "query.limit")
    problem(
        await h.client.get(f"/orgs/{parent}/descendants?max_depth=0", headers=h.auth()),
        400,
        "query.max_depth",
    )


def assert_preorder(top: str, listing: list[dict[str, Any]]) -> None:
    """Parents come before their children, and each subtree is listed contiguously."""
    stack = [top]
    for org in listing:
        while stack and stack[-1] != org["parent_id"]:
            stack.pop()
        assert stack, f"{org['id']} is not directly under the subtree being listed"
        stack.append(org["id"])


async def test_descendants_depth_first_and_max_depth(h: Harness) -> None:
    top = (await h.create_org(h.root.org_id, "Top"))["id"]
    # Created breadth-first so that id order and depth-first order differ.
    a = (await h.create_org(top, "A"))["id"]
    b = (await h.create_org(top, "B"))["id"]
    a1 = (await h.create_org(a, "A1"))["id"]
    b1 = (await h.create_org(b, "B1"))["id"]
    a2 = (await h.create_org(a, "A2"))["id"]
    a11 = (await h.create_org(a1, "A11"))["id"]

    listing = await descendants(h, top)
    assert len(listing) == 6
    assert {o["id"] for o in listing} == {a, b, a1, b1, a2, a11}
    assert_preorder(top, listing)
    order = [o["id"] for o in listing]
    assert order.index(a11) == order.index(a1) + 1
    assert order.index(b1) == order.index(b) + 1

    # Paged in twos, the same list.
    paged: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await h.client.get(f"/orgs/{top}/descendants", params=params, headers=h.auth())
        ).json()
        paged += [o["id"] for o in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == order

    assert {o["id"] for o in await descendants(h, top, max_depth=1)} == {a, b}
    assert {o["id"] for o in await descendants(h, top, max_depth=2)} == {a, b, a1, a2, b1}
    assert {o["id"] for o in await descendants(h, top, max_depth=3)} == set(order)
    assert {o["id"] for o in await descendants(h, a, max_depth=1)} == {a1, a2}
    assert [o["id"] for o in await descendants(h, top, **{"filter[name]": "a1"})] == [a1, a11]


# --- bad input -----------------------------------------------------------------------------


BAD_CREATES: list[tuple[str, Any, str | None]] = [
    ("wrong type name", {"name": 123}, "name"),
    ("wrong type tags", {"name": "ok", "tags": "env:prod"}, "tags"),
    ("wrong type tag item", {"name": "ok", "tags": [1]}, "tags[0]"),
    ("wrong type settings", {"name": "ok", "settings": []}, "settings"),
    ("bad plan", {"name": "ok", "plan": "platinum"}, "plan"),
    ("unknown field", {"name": "ok", "bogus": 1}, "bogus"),
    ("missing name", {"description": "no name"}, "name"),
    ("not an object", ["name"], None),
    ("empty name", {"name": ""}, "name"),
    ("whitespace name", {"name": " \t  "}, "name"),
    ("101 chars", {"name": "x" * 101}, "name"),
    ("201 chars", {"name": "x" * 201}, "name"),
    ("NUL", {"name": "a\x00b"}, "name"),
    ("newline", {"name": "a\nb"}, "name"),
    ("tab", {"name": "a\tb"}, "name"),
    ("DEL", {"name": "a\x7fb"}, "name"),
    ("bidi mark", {"name": "a\u200eb"}, "name"),
    ("line separator", {"name": "a\u2028b"}, "name"),
    ("timezone", {"name": "ok", "timezone": "Mars/Olympus_Mons"}, "timezone"),
    ("country", {"name": "ok", "country": "Germany"}, "country"),
    ("deployment", {"name": "ok", "deployment": "moon"}, "deployment"),
    ("tag", {"name": "ok", "tags": ["ok", "bad tag!"]}, "tags[1]"),
    ("description", {"name": "ok", "description": "d" * 2001}, "description"),
]


async def test_bad_create_bodies_write_nothing(h: Harness) -> None:
    parent = (await h.create_org(h.root.org_id, "Parent"))["id"]
    before = await counts(h)
    for label, body, field in BAD_CREATES:
        response = await h.client.post(f"/orgs/{parent}/children", json=body, headers=h.auth())
        try:
            problem(response, 400, field)
        except AssertionError as exc:
            raise AssertionError(f"{label}: {exc}") from exc
    for raw in (b'{"name": ', b"{name: 1}", b"\xff\xfe", b'{"name": "a"} trailing'):
        response = await h.client.post(
            f"/orgs/{parent}/children",
            content=raw,
            headers={**h.auth(), "Content-Type": "application/json"},
        )
        assert "JSON" in problem(response, 400, "body")["detail"], raw
    assert await counts(h) == before
    assert await child_ids(h, parent) == []


async def test_name_boundaries(h: Harness) -> None:
    parent = (await h.create_org(h.root.org_id, "Parent"))["id"]
    hundred = await h.create_org(parent, "é" * 100)
    assert hundred["name"] == "é" * 100
    padded = await h.create_org(parent, "   " + "p" * 100 + "   ")
    assert padded["name"] == "p" * 100
    inner_space = await h.create_org(parent, "Acme  Europe ❤")
    assert inner_space["name"] == "Acme  Europe ❤"


async def test_bad_updates_and_moves_write_nothing(h: Harness) -> None:
    org = await h.create_org(h.root.org_id, "Stable", tags=["env:prod"])
    path = f"/orgs/{org['id']}"
    before = await counts(h)
    bad_patches: list[tuple[Any, str | None]] = [
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": None}, "name"),
        ({"status": "deleted"}, "status"),
        ({"deployment": "eu"}, "deployment"),  # not changeable once created
        ({"parent_id": h.root.org_id}, "parent_id"),
        ({"timezone": "Nowhere/Town"}, "timezone"),
        ({"country": "DEU"}, "country"),
        ({"tags": ["a b"]}, "tags[0]"),
        ({"name": "ok", "version": 9}, "version"),
        ([], None),
    ]
    for body, field in bad_patches:
        response = await h.client.patch(path, json=body, headers=h.auth())
        try:
            problem(response, 400, field)
        except AssertionError as exc:
            raise AssertionError(f"{body}: {exc}") from exc
    problem(
        await h.client.patch(
            path, content=b"{", headers={**h.auth(), "Content-Type": "application/json"}
        ),
        400,
    )
    for body, field in [
        ({}, "parent_id"),
        ({"parent_id": 5}, "parent_id"),
        ({"parent_id": ""}, "parent_id"),
        ({"parent_id": h.root.org_id, "cascade": True}, "cascade"),
    ]:
        problem(await h.client.post(f"{path}/move", json=body, headers=h.auth()), 400, field)
    assert await counts(h) == before
    after = (await h.client.get(path, headers=h.auth())).json()
    assert after == org


async def test_bad_ids(h: Harness) -> None:
    problem(await get_org(h, "x" * 65), 400, "path.org_id")
    for weird in ("a%20b", "%E2%9D%A4", "%FF", "%ED%A0%80", "a'b", "a%25b"):
        problem(await h.client.get(f"/orgs/{weird}", headers=h.auth()), 404)


async def test_nul_characters_are_refused_on_both_databases(h: Harness) -> None:
    """PostgreSQL cannot store NUL in text; it is a 400 everywhere, never a 500."""
    root = h.root.org_id
    before = await counts(h)
    problem(await get_org(h, f"{root}%00"), 400, "path")
    problem(await h.client.delete("/orgs/a%00b", headers=h.auth()), 400, "path")
    for query in ("filter%5Bname%5D=%00", "tag=a%00", "cursor=%00"):
        response = await h.client.get(f"/orgs/{root}/children?{query}", headers=h.auth())
        problem(response, 400, "query")
    moved = await h.client.post(f"/orgs/{root}/move", json={"parent_id": "a\x00"}, headers=h.auth())
    assert moved.status_code in (404, 409), moved.text
    for body, field in (
        ({"name": "ok", "description": "a\x00b"}, "description"),
        ({"name": "ok", "settings": {"k": ["\x00"]}}, "settings"),
        ({"name": "ok", "customizations": {"a\x00": 1}}, "customizations"),
    ):
        response = await h.client.post(f"/orgs/{root}/children", json=body, headers=h.auth())
        problem(response, 400, field)
    # A literal backslash-u-0000 is ordinary text.
    fine = await h.create_org(root, "Fine", description="\\u0000", settings={"k": "\\u0000"})
    assert (await get_org(h, fine["id"])).json()["settings"] == {"k": "\\u0000"}
    # A NUL in a header does not stop the access log from being written.
    await h.client.get(f"/orgs/{root}", headers={**h.auth(), "User-Agent": "evil\x00agent"})
    await h.services.access_log.flush()
    after_nul = await h.client.get(f"/orgs/{root}", headers={**h.auth(), "User-Agent": "after"})
    assert after_nul.status_code == 200
    log = await h.client.get(f"/orgs/{root}/access_log", headers=h.auth())
    assert log.status_code == 200, log.text
    agents = [e["user_agent"] for e in log.json()["data"]]
    assert "after" in agents and "evil\ufffdagent" in agents
    assert (await counts(h))[0] == before[0] + 1


async def test_oversize_body_is_413(db_url: str) -> None:
    h = await start_harness(db_url, max_body_bytes=2048)
    try:
        parent = (await h.create_org(h.root.org_id, "Parent"))["id"]
        before = await counts(h)
        big = {"name": "Big", "description": "d" * 10_000}
        problem(await h.client.post(f"/orgs/{parent}/children", json=big, headers=h.auth()), 413)
        problem(await h.client.patch(f"/orgs/{parent}", json=big, headers=h.auth()), 413)
        assert await counts(h) == before
        assert await child_ids(h, parent) == []
        assert (await get_org(h, parent)).json()["description"] == ""
        # Just under the limit is fine.
        ok = await h.client.post(
            f"/orgs/{parent}/children",
            json={"name": "Small", "description": "d" * 1500},
            headers=h.auth(),
        )
        assert ok.status_code == 201, ok.text
    finally:
        await stop_harness(h)


# --- audit ---------------------------------------------------------------------------------


async def test_every_write_leaves_an_audit_entry(h: Harness) -> None:
    root = h.root.org_id
    actor = f"key:{h.root.key_id}"
    created = await h.client.post(
        f"/orgs/{root}/children", json={"name": "Audited", "tags": ["env:prod"]}, headers=h.auth()
    )
    org = created.json()
    target = (await h.create_org(root, "Target"))["id"]
    kid = (await h.create_org(org["id"], "Kid"))["id"]

    updated = await h.client.patch(
        f"/orgs/{org['id']}", json={"name": "Renamed", "description": "same"}, headers=h.auth()
    )
    assert updated.status_code == 200
    # A PATCH that changes nothing writes no entry.
    noop = await h.client.patch(
        f"/orgs/{org['id']}", json={"description": "same"}, headers=h.auth()
    )
    assert noop.status_code == 200 and noop.json()["version"] == updated.json()["version"]
    moved = await h.client.post(
        f"/orgs/{org['id']}/move", json={"parent_id": target}, headers=h.auth()
    )
    assert moved.status_code == 200
    deleted = await h.client.delete(f"/orgs/{org['id']}?cascade=true", headers=h.auth())
    assert deleted.status_code == 200
    restored = await h.client.post(f"/orgs/{org['id']}/restore", headers=h.auth())
    assert restored.status_code == 200
    # Refused writes leave nothing.
    before = await counts(h)
    problem(await h.client.delete(f"/orgs/{root}", headers=h.auth()), 409)
    problem(await h.client.patch(f"/orgs/{org['id']}", json={"name": ""}, headers=h.auth()), 400)
    assert await counts(h) == before

    entries = await audit_entries(h, org["id"])  # newest first
    assert [e["action"] for e in entries] == [
        "org.restored",
        "org.deleted",
        "org.moved",
        "org.updated",
        "org.created",
    ]
    by_action = {e["action"]: e for e in entries}
    responses = {
        "org.created": created,
        "org.updated": updated,
        "org.moved": moved,
        "org.deleted": deleted,
        "org.restored": restored,
    }
    for action, entry in by_action.items():
        assert entry["actor"] == actor and entry["actor_key_id"] == h.root.key_id
        assert (entry["target_type"], entry["target_id"], entry["org_id"]) == (
            "org",
            org["id"],
            org["id"],
        )
        assert entry["request_id"] == responses[action].headers["x-request-id"]
        assert entry["hash"]
    assert by_action["org.created"]["before"] is None
    assert by_action["org.created"]["after"]["name"] == "Audited"
    assert by_action["org.created"]["after"]["tags"] == ["env:prod"]
    assert by_action["org.updated"]["before"] == {"name": "Audited", "description": ""}
    assert by_action["org.updated"]["after"] == {"name": "Renamed", "description": "same"}
    assert by_action["org.moved"]["before"] == {"parent_id": root}
    assert by_action["org.moved"]["after"] == {"parent_id": target}

    kid_actions = [e["action"] for e in await audit_entries(h, kid)]
    assert kid_actions == ["org.restored", "org.deleted", "org.created"]
    kid_deleted = next(e for e in await audit_entries(h, kid) if e["action"] == "org.deleted")
    assert kid_deleted["after"] == {"cascade_of": org["id"]}

    # The audit of a deleted org stays readable (for as long as it can be restored).
    assert (await h.client.delete(f"/orgs/{kid}", headers=h.auth())).status_code == 200
    assert (await audit_entries(h, kid))[0]["action"] == "org.deleted"

    async with h.services.db.read() as conn:
        assert await audit_service.verify(conn) == []


async def test_a_replayed_create_repeats_etag_and_location(h) -> None:
    headers = {**h.auth(), "Idempotency-Key": "replay-headers"}
    body = {"name": "Replayed"}
    first = await h.client.post(f"/orgs/{h.root.org_id}/children", json=body, headers=headers)
    second = await h.client.post(f"/orgs/{h.root.org_id}/children", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["location"] == first.headers["location"] == f"/orgs/{first.json()['id']}"
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
