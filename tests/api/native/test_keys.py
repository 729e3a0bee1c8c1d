"""API keys: the endpoints' access matrix, scopes and expiry, revocation, and the key CLI.

Every test taking ``h`` runs on SQLite and on PostgreSQL; the CLI tests drive ``orgplane`` as a
subprocess against a SQLite file migrated by ``orgplane migrate``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from orgplane.app import build_services, create_app
from orgplane.core.bootstrap import create_root_with_admin_key
from orgplane.core.ids import hash_secret
from orgplane.models import audit_log, credentials, orgs
from support.cli import run_cli
from support.harness import Harness, make_settings


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _rows(h: Harness, statement: Any) -> list[Any]:
    async with h.services.db.read() as conn:
        return list((await conn.execute(statement)).all())


async def _new_key(h: Harness, org: str, scopes: list[str], key: str | None = None, **fields: Any):
    """Create a key through the API; the whole 201 body (with the secret) back."""
    response = await h.client.post(
        f"/orgs/{org}/api_keys",
        json={"name": fields.pop("name", "test"), "scopes": scopes, **fields},
        headers=h.auth(key),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _assert_not_found(response: httpx.Response, org_ref: str) -> None:
    """An org out of reach is answered exactly like one that does not exist."""
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == "https://orgplane.dev/problems/not_found"
    assert body["title"] == "Not found"
    assert body["detail"] == f"organization {org_ref!r} not found"


# --- the access matrix ---------------------------------------------------------------------


async def test_api_key_endpoints_answer_401_403_404_and_succeed(h):
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    b = (await h.create_org(root, "B"))["id"]
    a_key = await h.create_key(a, ["*"])
    a_readonly = await h.create_key(a, ["orgs:read", "audit:read"])
    a_keys_read = await h.create_key(a, ["keys:read"])
    other = await h.services.db.transaction(create_root_with_admin_key, name="Other tenant")
    victim = await _new_key(h, a, ["orgs:read"])

    calls = [
        ("POST", "/orgs/{org}/api_keys", {"name": "x", "scopes": ["orgs:read"]}),
        ("GET", "/orgs/{org}/api_keys", None),
        ("DELETE", "/orgs/{org}/api_keys/" + victim["id"], None),
    ]
    for method, template, body in calls:
        url = template.format(org=a)
        # No credentials, a malformed key, an unknown well-formed key: 401.
        for headers in (
            {},
            {"Authorization": "Bearer not-a-key"},
            {"Authorization": "Basic abc"},
            h.auth("opk_" + "A" * 38),
        ):
            response = await h.client.request(method, url, json=body, headers=headers)
            assert response.status_code == 401, (method, headers, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.headers["content-type"].startswith("application/problem+json")
        # Inside the subtree without the scope: 403.
        response = await h.client.request(method, url, json=body, headers=h.auth(a_readonly))
        assert response.status_code == 403, (method, response.text)
        assert "keys:" in response.json()["detail"]
        # Out of reach (ancestor, sibling, another tenant) or nonexistent: the same 404.
        for key, org_ref in ((a_key, root), (a_key, b), (other.api_key, a), (a_key, "nope123")):
            response = await h.client.request(
                method, template.format(org=org_ref), json=body, headers=h.auth(key)
            )
            _assert_not_found(response, org_ref)
    # Credentials are checked before anything else, even for an org that does not exist.
    assert (await h.client.get("/orgs/nope123/api_keys")).status_code == 401
    # keys:read lists but cannot create or revoke.
    response = await h.client.get(f"/orgs/{a}/api_keys", headers=h.auth(a_keys_read))
    assert response.status_code == 200
    response = await h.client.post(
        f"/orgs/{a}/api_keys",
        json={"name": "x", "scopes": ["orgs:read"]},
        headers=h.auth(a_keys_read),
    )
    assert response.status_code == 403
    # Nothing above changed anything: the victim is still alive and no key named "x" exists.
    assert (await h.client.get(f"/orgs/{a}", headers=h.auth(victim["api_key"]))).status_code == 200
    assert not await _rows(h, sa.select(credentials.c.id).where(credentials.c.name == "x"))

    # The valid calls, and their effects.
    response = await h.client.post(
        f"/orgs/{a}/api_keys", json={"name": "ci", "scopes": ["orgs:read"]}, headers=h.auth(a_key)
    )
    assert response.status_code == 201
    created = response.json()
    assert created["org_id"] == a and created["name"] == "ci" and created["kind"] == "native"
    listed = (await h.client.get(f"/orgs/{a}/api_keys", headers=h.auth(a_key))).json()
    assert created["id"] in {k["id"] for k in listed["data"]}
    response = await h.client.delete(f"/orgs/{a}/api_keys/{victim['id']}", headers=h.auth(a_key))
    assert response.status_code == 204
    assert (await h.client.get(f"/orgs/{a}", headers=h.auth(victim["api_key"]))).status_code == 401


# --- creation: shown once, stored hashed ------------------------------------------------------


async def test_secret_is_shown_once_and_only_its_hash_is_stored(h):
    created = await _new_key(h, h.root.org_id, ["orgs:read"], name="reporting")
    secret = created["api_key"]
    assert secret.startswith("opk_") and len(secret) == 4 + 32 + 6
    assert created["hint"] == secret[:8]
    assert created["scopes"] == ["orgs:read"]
    assert created["last_used_at"] is None and created["revoked_at"] is None

    # The key works at once.
    response = await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth(secret))
    assert response.status_code == 200

    # Listing never shows the secret again.
    response = await h.client.get(f"/orgs/{h.root.org_id}/api_keys", headers=h.auth())
    assert response.status_code == 200
    assert secret not in response.text and secret[8:] not in response.text
    listed = {k["id"]: k for k in response.json()["data"]}
    assert "api_key" not in listed[created["id"]]
    assert listed[created["id"]]["hint"] == secret[:8]

    # The database holds the sha256 of the secret and nothing from which it can be read back.
    (row,) = await _rows(h, sa.select(credentials).where(credentials.c.public_id == created["id"]))
    assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    for row in await _rows(h, sa.select(credentials)):
        for value in row:
            assert secret[8:] not in str(value)


async def test_scopes_cannot_exceed_the_creators(h):
    root = h.root.org_id
    creator = await h.create_key(root, ["orgs:write", "keys:write"])
    before = len(await _rows(h, sa.select(credentials.c.id)))
    for asked, excess in (
        (["audit:read"], "audit:read"),
        (["*"], "audit:read"),
        (["orgs:read", "usage:write"], "usage:write"),
        (["keys:write", "audit:write"], "audit:write"),
    ):
        response = await h.client.post(
            f"/orgs/{root}/api_keys", json={"name": "x", "scopes": asked}, headers=h.auth(creator)
        )
        assert response.status_code == 403, (asked, response.text)
        assert excess in response.json()["detail"]
    assert len(await _rows(h, sa.select(credentials.c.id))) == before

    # What the creator holds, including what its write scopes imply, it may grant.
    granted = await _new_key(h, root, ["orgs:read", "keys:read"], key=creator)
    assert granted["scopes"] == ["keys:read", "orgs:read"]
    await _new_key(h, root, ["orgs:write", "keys:write"], key=creator)

    # A narrower key cannot widen itself either.
    reader = await h.create_key(root, ["orgs:read", "keys:write"])
    response = await h.client.post(
        f"/orgs/{root}/api_keys",
        json={"name": "x", "scopes": ["orgs:write"]},
        headers=h.auth(reader),
    )
    assert response.status_code == 403


async def test_write_scope_implies_read_in_enforcement(h):
    root = h.root.org_id
    child = (await h.create_org(root, "Child"))["id"]
    writer = await h.create_key(root, ["orgs:write", "keys:write"])
    reader = await h.create_key(root, ["orgs:read"])

    assert (await h.client.get(f"/orgs/{child}", headers=h.auth(writer))).status_code == 200
    response = await h.client.get(f"/orgs/{root}/children", headers=h.auth(writer))
    assert response.status_code == 200 and [o["id"] for o in response.json()["data"]] == [child]
    # keys:write lists keys (keys:read) without holding keys:read itself.
    assert (await h.client.get(f"/orgs/{root}/api_keys", headers=h.auth(writer))).status_code == 200

    # Read does not imply write.
    response = await h.client.patch(f"/orgs/{child}", json={"name": "X"}, headers=h.auth(reader))
    assert response.status_code == 403
    assert (await h.client.get(f"/orgs/{root}/api_keys", headers=h.auth(reader))).status_code == 403
    response = await h.client.patch(f"/orgs/{child}", json={"name": "X"}, headers=h.auth(writer))
    assert response.status_code == 200 and response.json()["name"] == "X"
    # Neither scope reaches the logs.
    response = await h.client.get(f"/orgs/{root}/audit", headers=h.auth(writer))
    assert response.status_code == 403


async def test_unknown_scopes_are_400_naming_each(h):
    url = f"/orgs/{h.root.org_id}/api_keys"
    response = await h.client.post(
        url, json={"name": "x", "scopes": ["orgs:read", "bogus", "orgs:fly"]}, headers=h.auth()
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    fields = [e["field"] for e in response.json()["errors"]]
    assert fields == ["scopes[1]", "scopes[2]"]
    assert "bogus" in response.json()["errors"][0]["message"]

    response = await h.client.post(url, json={"name": "x", "scopes": []}, headers=h.auth())
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "scopes"
    response = await h.client.post(url, json={"name": "x", "scopes": "orgs:read"}, headers=h.auth())
    assert response.status_code == 400
    response = await h.client.post(
        url, json={"name": "x", "scopes": ["orgs:read"], "admin": True}, headers=h.auth()
    )
    assert response.status_code == 400
    response = await h.client.post(
        url, json={"name": "  ", "scopes": ["orgs:read"]}, headers=h.auth()
    )
    assert response.status_code in (400, 422)
    assert not await _rows(h, sa.select(credentials.c.id).where(credentials.c.name == "x"))


async def test_expiry_must_be_future_and_within_the_creators(h):
    root = h.root.org_id
    url = f"/orgs/{root}/api_keys"
    now = datetime.now(UTC)

    response = await h.client.post(
        url,
        json={"name": "x", "scopes": ["orgs:read"], "expires_at": _iso(now - timedelta(hours=1))},
        headers=h.auth(),
    )
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"].endswith("expires_at")
    response = await h.client.post(
        url,
        json={"name": "x", "scopes": ["orgs:read"], "expires_at": "2099-01-01T00:00:00"},
        headers=h.auth(),
    )
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"].endswith("expires_at")

    creator_expiry = now + timedelta(hours=1)
    creator = await _new_key(h, root, ["orgs:read", "keys:write"], expires_at=_iso(creator_expiry))
    assert _parse(creator["expires_at"]) == creator_expiry
    for expires_at in (_iso(now + timedelta(hours=2)), None):
        response = await h.client.post(
            url,
            json={"name": "x", "scopes": ["orgs:read"], "expires_at": expires_at},
            headers=h.auth(creator["api_key"]),
        )
        assert response.status_code == 403, (expires_at, response.text)
        assert "outlive" in response.json()["detail"]
    assert not await _rows(h, sa.select(credentials.c.id).where(credentials.c.name == "x"))

    shorter = now + timedelta(minutes=30)
    made = await _new_key(h, root, ["orgs:read"], key=creator["api_key"], expires_at=_iso(shorter))
    assert _parse(made["expires_at"]) == shorter
    # Exactly the creator's expiry is allowed too.
    await _new_key(h, root, ["orgs:read"], key=creator["api_key"], expires_at=_iso(creator_expiry))


async def test_an_expired_key_is_refused_even_while_cached(h):
    root = h.root.org_id
    expires_at = datetime.now(UTC) + timedelta(seconds=1.0)
    created = await _new_key(h, root, ["orgs:read"], expires_at=_iso(expires_at))
    # Used (and so cached) while valid.
    response = await h.client.get(f"/orgs/{root}", headers=h.auth(created["api_key"]))
    assert response.status_code == 200
    await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.05)
    response = await h.client.get(f"/orgs/{root}", headers=h.auth(created["api_key"]))
    assert response.status_code == 401
    assert response.json()["detail"].startswith("invalid credentials")

    response = await h.client.get(
        f"/orgs/{root}/access_log", params={"status": "FAILURE"}, headers=h.auth()
    )
    failures = [e for e in response.json()["data"] if e["key_id"] == created["id"]]
    assert [e["detail"] for e in failures] == ["expired key"]


# --- descendants --------------------------------------------------------------------------


async def test_an_ancestor_key_mints_keys_for_a_descendant_that_reach_only_its_subtree(h):
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    a1 = (await h.create_org(a, "A1"))["id"]
    a11 = (await h.create_org(a1, "A11"))["id"]
    b = (await h.create_org(root, "B"))["id"]
    a_admin = await h.create_key(a, ["*"])

    # A's key creates a key for its grandchild-to-be's parent A1.
    created = await _new_key(h, a1, ["orgs:write", "keys:write"], key=a_admin)
    assert created["org_id"] == a1
    sub = created["api_key"]
    for org in (a1, a11):
        assert (await h.client.get(f"/orgs/{org}", headers=h.auth(sub))).status_code == 200
    for org in (a, root, b):
        _assert_not_found(await h.client.get(f"/orgs/{org}", headers=h.auth(sub)), org)
    # Its view of itself does not leak the parent.
    assert (await h.client.get(f"/orgs/{a1}", headers=h.auth(sub))).json()["parent_id"] is None
    # It shows up in A1's list, not in A's.
    listed = (await h.client.get(f"/orgs/{a1}/api_keys", headers=h.auth(a_admin))).json()
    assert [k["id"] for k in listed["data"]] == [created["id"]]
    listed = (await h.client.get(f"/orgs/{a}/api_keys", headers=h.auth(a_admin))).json()
    assert created["id"] not in {k["id"] for k in listed["data"]}
    # And it cannot revoke its ancestor's key: that org is out of its reach.
    a_admin_id = listed["data"][0]["id"]
    _assert_not_found(
        await h.client.delete(f"/orgs/{a}/api_keys/{a_admin_id}", headers=h.auth(sub)), a
    )


# --- revocation ---------------------------------------------------------------------------


async def test_revoked_key_is_refused_on_its_very_next_request(h):
    root = h.root.org_id
    a = (await h.create_org(root, "A"))["id"]
    b = (await h.create_org(root, "B"))["id"]
    created = await _new_key(h, a, ["orgs:read"])
    secret = created["api_key"]
    # Cached now (the cache lasts 30 s by default): only invalidation can make the next one fail.
    assert (await h.client.get(f"/orgs/{a}", headers=h.auth(secret))).status_code == 200

    # Through another org's path: 404, and the key still works.
    response = await h.client.delete(f"/orgs/{b}/api_keys/{created['id']}", headers=h.auth())
    assert response.status_code == 404
    assert created["id"] in response.json()["detail"]
    response = await h.client.delete(f"/orgs/{root}/api_keys/{created['id']}", headers=h.auth())
    assert response.status_code == 404
    assert (await h.client.get(f"/orgs/{a}", headers=h.auth(secret))).status_code == 200
    # Unknown key id: 404.
    response = await h.client.delete(f"/orgs/{a}/api_keys/key_doesnotexist", headers=h.auth())
    assert response.status_code == 404

    response = await h.client.delete(f"/orgs/{a}/api_keys/{created['id']}", headers=h.auth())
    assert response.status_code == 204 and response.content == b""
    response = await h.client.get(f"/orgs/{a}", headers=h.auth(secret))
    assert response.status_code == 401

    listed = (await h.client.get(f"/orgs/{a}/api_keys", headers=h.auth())).json()
    assert created["id"] not in {k["id"] for k in listed["data"]}
    listed = (
        await h.client.get(
            f"/orgs/{a}/api_keys", params={"include_revoked": "true"}, headers=h.auth()
        )
    ).json()
    (revoked,) = [k for k in listed["data"] if k["id"] == created["id"]]
    assert revoked["revoked_at"] is not None

    # Revoking again is harmless and writes no second audit entry.
    response = await h.client.delete(f"/orgs/{a}/api_keys/{created['id']}", headers=h.auth())
    assert response.status_code == 204
    entries = await _rows(
        h,
        sa.select(audit_log.c.action).where(
            audit_log.c.target_id == created["id"], audit_log.c.action == "key.revoked"
        ),
    )
    assert len(entries) == 1


async def test_a_key_revoking_itself_is_refused_at_once(h):
    root = h.root.org_id
    created = await _new_key(h, root, ["keys:write"])
    secret = created["api_key"]
    response = await h.client.delete(
        f"/orgs/{root}/api_keys/{created['id']}", headers=h.auth(secret)
    )
    assert response.status_code == 204
    response = await h.client.get(f"/orgs/{root}/api_keys", headers=h.auth(secret))
    assert response.status_code == 401


# --- listing ------------------------------------------------------------------------------


async def test_key_list_pages_through_every_key_once(h):
    root = h.root.org_id
    made = [(await _new_key(h, root, ["orgs:read"], name=f"k{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await h.client.get(f"/orgs/{root}/api_keys", params=params, headers=h.auth())
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["data"]) <= 2
        seen += [k["id"] for k in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 6
    assert seen == [h.root.key_id, *made]  # oldest first

    for bad in ({"cursor": "garbage!"}, {"limit": 0}, {"limit": 5000}):
        response = await h.client.get(f"/orgs/{root}/api_keys", params=bad, headers=h.auth())
        assert response.status_code == 400, (bad, response.text)


async def test_last_used_at_is_recorded_after_use(h):
    root = h.root.org_id
    created = await _new_key(h, root, ["orgs:read"])
    assert created["last_used_at"] is None
    before_use = datetime.now(UTC)
    assert (
        await h.client.get(f"/orgs/{root}", headers=h.auth(created["api_key"]))
    ).status_code == 200
    await h.services.access_log.flush()

    (row,) = await _rows(
        h, sa.select(credentials.c.last_used_at).where(credentials.c.public_id == created["id"])
    )
    assert row.last_used_at is not None and row.last_used_at >= before_use - timedelta(seconds=1)
    listed = (await h.client.get(f"/orgs/{root}/api_keys", headers=h.auth())).json()
    (entry,) = [k for k in listed["data"] if k["id"] == created["id"]]
    assert _parse(entry["last_used_at"]) == row.last_used_at
    # A failed attempt with a revoked key does not count as a use.
    await h.client.delete(f"/orgs/{root}/api_keys/{created['id']}", headers=h.auth())
    await h.client.get(f"/orgs/{root}", headers=h.auth(created["api_key"]))
    await h.services.access_log.flush()
    (again,) = await _rows(
        h, sa.select(credentials.c.last_used_at).where(credentials.c.public_id == created["id"])
    )
    assert again.last_used_at == row.last_used_at


# --- the CLI ------------------------------------------------------------------------------


@asynccontextmanager
async def _client_on(url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app on an existing database (no bootstrap), with no key cache."""
    services = build_services(make_settings(url, key_cache_seconds=0))
    app = create_app(services.settings, services)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://orgplane.test"
    )
    try:
        yield client
    finally:
        await client.aclose()
        await services.access_log.stop()
        await services.db.dispose()


async def _count_roots(url: str) -> int:
    services = build_services(make_settings(url))
    try:
        async with services.db.read() as conn:
            statement = sa.select(orgs.c.id).where(orgs.c.parent_id.is_(None))
            return len((await conn.execute(statement)).all())
    finally:
        await services.db.dispose()


async def test_cli_bootstrap_keys_and_tree(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    db = ["--database-url", url]
    result = await run_cli("migrate", *db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    result = await run_cli("bootstrap", "--json", *db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    boot = json.loads(result.stdout)
    assert set(boot) == {"org_id", "api_key", "owner_email", "console_link"}
    assert boot["api_key"].startswith("opk_")
    # Again: nothing new.
    again = await run_cli("bootstrap", "--json", *db, cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["org_id"] is None
    assert await _count_roots(url) == 1

    async with _client_on(url) as client:
        admin = {"Authorization": f"Bearer {boot['api_key']}"}

        async def child(parent: str, name: str) -> str:
            response = await client.post(
                f"/orgs/{parent}/children", json={"name": name}, headers=admin
            )
            assert response.status_code == 201, response.text
            org_id: str = response.json()["id"]
            return org_id

        response = await client.get(f"/orgs/{boot['org_id']}", headers=admin)
        assert response.status_code == 200 and response.json()["name"] == "Root"
        a = await child(boot["org_id"], "Acme")
        a1 = await child(a, "Acme EU")
        b = await child(boot["org_id"], "Beta")
        gone = await child(b, "Gone")
        assert (await client.delete(f"/orgs/{gone}", headers=admin)).status_code == 200

        whole, under_b = await asyncio.gather(
            run_cli("orgs", "tree", *db, cwd=tmp_path),
            run_cli("orgs", "tree", b, "--deleted", *db, cwd=tmp_path),
        )
        assert whole.returncode == 0, whole.stderr
        assert whole.stdout.splitlines() == [
            f"Root ({boot['org_id']})",
            f"  Acme ({a})",
            f"    Acme EU ({a1})",
            f"  Beta ({b})",
        ]
        assert under_b.stdout.splitlines() == [f"Beta ({b})", f"  Gone ({gone}) [deleted]"]

        # keys create: a working key with exactly the scopes asked for. In a zone far from UTC,
        # a naive --expires still means UTC, as the help says.
        result = await run_cli(
            "keys", "create", a, "--name", "deploy", "--scope", "orgs:read",
            "--expires", "2099-01-01T00:00:00", "--json", *db,
            cwd=tmp_path, env={"TZ": "Asia/Tokyo"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        made = json.loads(result.stdout)
        key = {"Authorization": f"Bearer {made['api_key']}"}
        assert (await client.get(f"/orgs/{a1}", headers=key)).status_code == 200
        assert (await client.get(f"/orgs/{b}", headers=key)).status_code == 404
        response = await client.patch(f"/orgs/{a}", json={"name": "x"}, headers=key)
        assert response.status_code == 403
        listed = (await client.get(f"/orgs/{a}/api_keys", headers=admin)).json()["data"]
        (made_row,) = [k for k in listed if k["id"] == made["key_id"]]
        assert made_row["scopes"] == ["orgs:read"] and made_row["name"] == "deploy"
        assert _parse(made_row["expires_at"]) == datetime(2099, 1, 1, tzinfo=UTC)

        result = await run_cli("keys", "list", a, *db, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        (line,) = result.stdout.splitlines()
        assert made["key_id"] in line and "active" in line and "orgs:read" in line
        assert "deploy" in line and made["api_key"][:8] in line
        assert made["api_key"][8:] not in result.stdout

        result = await run_cli("keys", "revoke", made["key_id"], *db, cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.strip() == f"revoked {made['key_id']}"
        assert (await client.get(f"/orgs/{a1}", headers=key)).status_code == 401
        listing = await run_cli("keys", "list", a, *db, cwd=tmp_path)
        assert "revoked" in listing.stdout and "active" not in listing.stdout

        # The CLI's changes are audited like any other.
        response = await client.get(f"/orgs/{a}/audit", params={"action": "key.*"}, headers=admin)
        actions = [(e["action"], e["actor"], e["target_id"]) for e in response.json()["data"]]
        assert actions == [
            ("key.revoked", "cli", made["key_id"]),
            ("key.created", "cli", made["key_id"]),
        ]

    # Errors are one clear line and a non-zero exit, never a traceback.
    failures = [("keys", "create", "nope123"), ("keys", "create", a, "--scope", "bogus")]
    results = await asyncio.gather(*(run_cli(*args, *db, cwd=tmp_path) for args in failures))
    for args, result in zip(failures, results, strict=True):
        assert result.returncode != 0, args
        assert result.stderr.startswith("error:"), (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert "bogus" in results[1].stderr


async def test_vendor_kinds_mint_pairs_in_the_vendors_formats(h: Harness) -> None:
    """Datadog's API + application key and Sumo Logic's access id + key: shown once, stored as
    one hash, sent the vendor's way, listed and revoked like any key."""
    made = {}
    for kind in ("datadog", "sumologic"):
        response = await h.client.post(
            f"/orgs/{h.root.org_id}/api_keys",
            json={"name": kind, "scopes": ["orgs:read"], "kind": kind},
            headers=h.auth(),
        )
        assert response.status_code == 201, response.text
        made[kind] = response.json()
    dd, sumo = made["datadog"], made["sumologic"]
    assert re.fullmatch(r"[0-9a-f]{32}", dd["api_key"])
    assert re.fullmatch(r"[0-9a-f]{40}", dd["application_key"])
    assert re.fullmatch(r"su[0-9A-Za-z]{12}", sumo["access_id"])
    assert re.fullmatch(r"[0-9A-Za-z]{64}", sumo["access_key"])
    assert sumo["api_key"] == f"{sumo['access_id']}:{sumo['access_key']}"

    dd_headers = {"DD-API-KEY": dd["api_key"], "DD-APPLICATION-KEY": dd["application_key"]}
    basic = httpx.BasicAuth(sumo["access_id"], sumo["access_key"])
    for request in (
        h.client.get("/me", headers=dd_headers),
        h.client.get("/me", auth=basic),
        h.client.get("/me", headers={"Authorization": f"Bearer {sumo['api_key']}"}),
    ):
        response = await request
        assert response.status_code == 200, response.text
        assert response.json()["scopes"] == ["orgs:read"]
    # One half of a pair is not a credential; nor is a pair with a wrong half.
    for request in (
        h.client.get("/me", headers={"DD-API-KEY": dd["api_key"]}),
        h.client.get("/me", headers={**dd_headers, "DD-APPLICATION-KEY": "0" * 40}),
        h.client.get("/me", auth=httpx.BasicAuth(sumo["access_id"], "x" * 64)),
        h.client.get("/me", headers={"Authorization": "Basic !!not-base64"}),
    ):
        assert (await request).status_code == 401

    async with h.services.db.read() as conn:
        stored = set((await conn.execute(sa.select(credentials.c.key_hash))).scalars())
    for secret in (dd["api_key"], dd["application_key"], sumo["access_key"]):
        assert hash_secret(secret) not in stored
    listed = await h.client.get(f"/orgs/{h.root.org_id}/api_keys", headers=h.auth())
    kinds = {k["id"]: k["kind"] for k in listed.json()["data"]}
    assert kinds[dd["id"]] == "datadog" and kinds[sumo["id"]] == "sumologic"
    for key in (dd, sumo):
        revoked = await h.client.delete(
            f"/orgs/{h.root.org_id}/api_keys/{key['id']}", headers=h.auth()
        )
        assert revoked.status_code == 204
    assert (await h.client.get("/me", headers=dd_headers)).status_code == 401
    assert (await h.client.get("/me", auth=basic)).status_code == 401


# --- a tenant root keeps a key able to manage keys ---------------------------------------------


async def test_the_tenant_roots_last_key_manager_cannot_revoke_itself(h):
    root = h.root.org_id
    own = f"/orgs/{root}/api_keys/{h.root.key_id}"
    # Keys that cannot manage keys, expired ones and a child's keys do not count.
    reader = await _new_key(h, root, ["orgs:read", "keys:read"])
    child = (await h.create_org(root, "Child"))["id"]
    child_admin = await _new_key(h, child, ["*"])

    refused = await h.client.delete(own, headers=h.auth())
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    detail = refused.json()["detail"]
    assert "last live key of tenant root" in detail and "keys:write" in detail
    assert h.root.key_id in detail
    # Nothing changed: the key still works, no revocation was audited.
    assert (await h.client.get("/me", headers=h.auth())).status_code == 200
    async with h.services.db.read() as conn:
        revoked = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(audit_log)
                .where(audit_log.c.action == "key.revoked")
            )
        ).scalar_one()
    assert revoked == 0

    # A child's last key manager may go (its ancestors can mint another), as may a reader.
    response = await h.client.delete(
        f"/orgs/{child}/api_keys/{child_admin['id']}", headers=h.auth(child_admin["api_key"])
    )
    assert response.status_code == 204, response.text
    response = await h.client.delete(f"/orgs/{root}/api_keys/{reader['id']}", headers=h.auth())
    assert response.status_code == 204, response.text

    # With another key manager in the root, the first may revoke itself; that one is then last.
    second = await _new_key(h, root, ["keys:write", "orgs:read"])
    assert (await h.client.delete(own, headers=h.auth())).status_code == 204
    assert (await h.client.get("/me", headers=h.auth())).status_code == 401
    last = f"/orgs/{root}/api_keys/{second['id']}"
    assert (await h.client.delete(last, headers=h.auth(second["api_key"]))).status_code == 409


async def test_two_key_managers_revoking_themselves_at_once_leave_one(h):
    """Each revocation locks the org's row before it counts the other key managers, so of two
    at once one comes first and the other sees it: never both gone."""
    root = h.root.org_id
    survivor = (h.root.key_id, h.root.api_key)
    for i in range(ROOT_REVOKE_ROUNDS):
        second = await _new_key(h, root, ["*"], key=survivor[1], name=f"k{i}")
        keys = [survivor, (second["id"], second["api_key"])]
        responses = await asyncio.gather(
            *(
                h.client.delete(f"/orgs/{root}/api_keys/{key_id}", headers=h.auth(secret))
                for key_id, secret in keys
            )
        )
        statuses = [r.status_code for r in responses]
        assert sorted(statuses) == [204, 409], (i, [r.text for r in responses])
        survivor = keys[statuses.index(409)]
        async with h.services.db.read() as conn:
            live = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(credentials.join(orgs, orgs.c.id == credentials.c.org_id))
                    .where(orgs.c.public_id == root, credentials.c.revoked_at.is_(None))
                )
            ).scalar_one()
        assert live == 1, f"round {i}"


ROOT_REVOKE_ROUNDS = 20
