"""An org or user out of reach answers exactly as one that does not exist, on the surfaces that
take integer keys and Sumo Logic ids; and a key never reads its parent's id in its own ledger
or audit trail (``GET /orgs/{own}`` hides it too).

Each probe is sent twice with the same key: once naming something that exists in another tenant
(or above the key's org), once naming an id of the same format that exists nowhere. The two
answers must be the same status and the same body, apart from the request id and the id sent.
"""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa

from orgplane.core.ids import sumo_org_id
from orgplane.models import users
from support.harness import Harness
from support.keys import dialect_key
from support.make import org_key
from support.people import make_user

NOWHERE = 10**9  # an integer key no org or user has


def _same(a: httpx.Response, b: httpx.Response, sent_a: str, sent_b: str) -> None:
    def plain(response: httpx.Response, sent: str) -> str:
        text = response.text.replace(sent, "<id>")
        request_id = response.headers.get("x-request-id")
        body = response.json()
        if isinstance(body, dict) and "errors" in body and "id" in body:
            # Sumo Logic's envelope carries an error id of its own for each answer.
            text = text.replace(body["id"], "<error id>")
        return text.replace(request_id, "<request>") if request_id else text

    assert a.status_code == b.status_code == 404, (a.text, b.text)
    assert plain(a, sent_a) == plain(b, sent_b), (a.text, b.text)


async def _other_tenant(h: Harness) -> dict[str, Any]:
    """A child org of the root with a member, and a key of a sibling tenant-like subtree."""
    hidden = (await h.create_org(h.root.org_id, "Hidden"))["id"]
    user = await make_user(h, hidden, "hidden@example.com", ["standard"])
    prober = (await h.create_org(h.root.org_id, "Prober"))["id"]
    return {"hidden": hidden, "user": user, "prober": prober}


async def test_make_answers_an_unreachable_org_or_user_as_a_missing_one(h: Harness) -> None:
    orgs = await _other_tenant(h)
    token = (await dialect_key(h, orgs["prober"], "make"))["token"]
    auth = {"Authorization": f"Token {token}"}
    hidden_key = await org_key(h, orgs["hidden"])
    prober_key = await org_key(h, orgs["prober"])
    for path in ("/organizations/{}", "/organizations/{}/managed-organizations"):
        seen = await h.client.get("/make/api/v2" + path.format(hidden_key), headers=auth)
        missing = await h.client.get("/make/api/v2" + path.format(NOWHERE), headers=auth)
        _same(seen, missing, str(hidden_key), str(NOWHERE))
        assert orgs["hidden"] not in seen.text
    # A user of another org, named by its integer key in the prober's own org.
    user_key = await _user_key(h, orgs["user"])
    role_path = "/make/api/v2/organizations/{}/user-organization-roles/{}"
    seen = await h.client.get(role_path.format(prober_key, user_key), headers=auth)
    missing = await h.client.get(role_path.format(prober_key, NOWHERE), headers=auth)
    _same(seen, missing, str(user_key), str(NOWHERE))
    assert orgs["user"] not in seen.text


async def _user_key(h: Harness, public_id: str) -> int:
    async with h.services.db.read() as conn:
        return int(
            (
                await conn.execute(sa.select(users.c.id).where(users.c.public_id == public_id))
            ).scalar_one()
        )


async def test_sumologic_answers_an_unreachable_org_as_a_missing_one(
    h: Harness, relaxed: None
) -> None:
    orgs = await _other_tenant(h)
    key = await dialect_key(h, orgs["prober"], "sumologic")
    auth = httpx.BasicAuth(key["access_id"], key["access_key"])
    hidden = sumo_org_id("us1", await org_key(h, orgs["hidden"]))
    nowhere = sumo_org_id("us1", NOWHERE)
    for path in ("/organizations/{}", "/organizations/usages/{}"):
        seen = await h.client.get(
            "/sumologic/api/v1" + path.format(hidden),
            auth=auth,
            headers={"parentDeploymentId": "us1"},
        )
        missing = await h.client.get(
            "/sumologic/api/v1" + path.format(nowhere),
            auth=auth,
            headers={"parentDeploymentId": "us1"},
        )
        _same(seen, missing, hidden, nowhere)
        assert orgs["hidden"] not in seen.text


async def test_a_childs_key_never_reads_its_parents_id(h: Harness) -> None:
    root = h.root.org_id
    response = await h.client.put(
        f"/orgs/{root}/limits/operations", json={"amount": 1_000_000}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    child = (await h.create_org(root, "Child", allocations={"operations": 20_000}))["id"]
    grandchild = (await h.create_org(child, "Grandchild"))["id"]
    response = await h.client.put(
        f"/orgs/{child}/children/{grandchild}/allocations/operations",
        json={"amount": 10_000},
        headers=h.auth(),
    )
    assert response.status_code == 200, response.text
    key = await h.create_key(child, ["credits:read", "audit:read", "orgs:read"])
    ledger = (await h.client.get(f"/orgs/{child}/ledger", headers=h.auth(key))).json()["data"]
    # Its own allocation from the root: the parent is hidden; its grandchild's: its own id.
    assert {e["parent_id"] for e in ledger if e["org_id"] == child} == {None}
    assert {e["parent_id"] for e in ledger if e["org_id"] == grandchild} == {child}
    for export in ("application/x-ndjson",):
        streamed = await h.client.get(
            f"/orgs/{child}/ledger", headers={**h.auth(key), "Accept": export}
        )
        assert root not in streamed.text
    audit = (await h.client.get(f"/orgs/{child}/audit", headers=h.auth(key))).json()["data"]
    allocated = [e for e in audit if e["action"] == "credits.allocated"]
    assert allocated and all(e["after"]["parent"] is None for e in allocated)
    assert root not in (await h.client.get(f"/orgs/{child}/audit", headers=h.auth(key))).text
    # The root's own key still reads it all.
    seen = (await h.client.get(f"/orgs/{child}/ledger", headers=h.auth())).json()["data"]
    assert {e["parent_id"] for e in seen if e["org_id"] == child} == {root}
