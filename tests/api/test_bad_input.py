"""Hostile input never answers 500: each class of bad input is a 4xx in the answering surface's
own error format, and a refused write leaves the audit trail and the ledger as they were."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import orjson
import sqlalchemy as sa
from litestar.routes import HTTPRoute

from orgplane.models import audit_log, ledger
from support.harness import Harness
from support.problems import problem

JSON = {"Content-Type": "application/json"}


async def _written(h: Harness) -> tuple[int, int]:
    """How many audit entries and ledger rows exist (a refused write adds none)."""
    async with h.services.db.read() as conn:
        audits = (await conn.execute(sa.select(sa.func.count()).select_from(audit_log))).scalar()
        rows = (await conn.execute(sa.select(sa.func.count()).select_from(ledger))).scalar()
    return int(audits or 0), int(rows or 0)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def _refused(h: Harness, method: str, url: str, body: bytes, field: str) -> dict[str, Any]:
    before = await _written(h)
    response = await h.client.request(method, url, content=body, headers={**h.auth(), **JSON})
    found = problem(response, 400, field)
    assert await _written(h) == before
    return found


async def test_a_body_that_is_not_json_orgplane_can_read_is_400_naming_body(h: Harness) -> None:
    root = h.root.org_id
    child = await h.create_org(root, "Child")
    for method, url in (
        ("PATCH", f"/orgs/{child['id']}"),
        ("POST", f"/orgs/{root}/children"),
        ("POST", f"/orgs/{root}/api_keys"),
        ("POST", f"/orgs/{child['id']}/move"),
    ):
        for body in (b'{"name": "a\xff\xfe"}', _nested(1000), _nested(5000)):
            found = await _refused(h, method, url, body, "body")
            assert "not valid JSON" in found["detail"], found


async def test_vendor_bodies_that_do_not_decode_are_400_in_the_vendor_format(h: Harness) -> None:
    make_key = await h.create_key(h.root.org_id, ["orgs:read", "orgs:write"], kind="make")
    response = await h.client.post(
        "/make/api/v2/organizations",
        content=b'{"name": "a\xff"}',
        headers={"Authorization": f"Token {make_key}", **JSON},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "IM005"
    response = await h.client.post(
        "/make/api/v2/organizations",
        content=_nested(2000),
        headers={"Authorization": f"Token {make_key}", **JSON},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "IM005"


async def test_settings_out_of_what_the_stores_hold_are_400_naming_the_field(h: Harness) -> None:
    child = await h.create_org(h.root.org_id, "Child")
    url = f"/orgs/{child['id']}"
    deep: Any = 1
    for _ in range(300):
        deep = {"a": deep}
    for settings in ({"n": 2**64}, {"n": -(2**63) - 1}, {"n": [2**70]}, deep):
        body = json.dumps({"settings": settings}).encode()
        await _refused(h, "PATCH", url, body, "settings")
    # The edges of the range are stored as they are.
    for n in (2**64 - 1, -(2**63)):
        response = await h.client.patch(
            url, content=b'{"settings": {"n": %d}}' % n, headers={**h.auth(), **JSON}
        )
        assert response.status_code == 200, response.text
        assert response.json()["settings"] == {"n": n}


async def test_customizations_out_of_what_the_stores_hold_are_400(h: Harness) -> None:
    child = await h.create_org(h.root.org_id, "Child")
    url = f"/orgs/{child['id']}/customizations"
    before = await _written(h)
    response = await h.client.put(
        url, content=b'{"n": 18446744073709551616}', headers={**h.auth(), **JSON}
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await _written(h) == before


async def test_times_before_year_one_in_utc_are_400_naming_the_parameter(h: Harness) -> None:
    root = h.root.org_id
    for log in ("audit", "children_audit", "access_log", "ledger"):
        for name, value in (
            ("since", "0001-01-01T00:00:00+23:59"),
            ("until", "0001-01-01T00:00:00+23:59"),
            ("until", "9999-12-31T23:59:59-23:59"),
        ):
            response = await h.client.get(
                f"/orgs/{root}/{log}", params={name: value}, headers=h.auth()
            )
            problem(response, 400, f"query.{name}")


async def test_nul_in_an_org_reference_or_a_cursor_never_reaches_sql(h: Harness) -> None:
    root = h.root.org_id
    child = await h.create_org(root, "Child")
    before = await _written(h)
    moved = await h.client.post(
        f"/orgs/{child['id']}/move", json={"parent_id": "a\x00b"}, headers=h.auth()
    )
    problem(moved, 404)
    assert await _written(h) == before
    cursor = base64.urlsafe_b64encode(orjson.dumps(["\x00", 1])).decode().rstrip("=")
    listed = await h.client.get(f"/orgs/{root}/users", params={"cursor": cursor}, headers=h.auth())
    problem(listed, 400, "query.cursor")


async def test_vendor_surfaces_answer_unmatched_routes_in_their_own_format(h: Harness) -> None:
    response = await h.client.get("/make/api/v2/organizations/abc")
    assert response.status_code == 404
    assert response.json()["code"] == "SC404"
    response = await h.client.get("/datadog/api/v2/nothing")
    assert response.status_code == 404
    assert response.json() == {"errors": ["no route GET /datadog/api/v2/nothing"]}
    response = await h.client.get("/sumologic/api/v1/nothing")
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "notfound"
    problem(await h.client.get("/nothing"), 404)
    response = await h.client.put("/make/api/v2/organizations")
    assert response.status_code == 405
    assert response.json()["code"] == "SC405"
    response = await h.client.put("/sumologic/api/v1/organizations")
    assert response.status_code == 405
    assert response.json()["errors"][0]["code"] == "method.unsupported"


async def test_options_and_a_405_list_the_same_methods_on_every_path(h: Harness) -> None:
    routes = [r for r in h.app.litestar.routes if isinstance(r, HTTPRoute)]
    checked = 0
    for route in routes:
        path = re.sub(r"\{[^}:]+:int\}", "1", route.path)
        path = re.sub(r"\{[^}]+\}", "x", path)
        missing = [m for m in ("PUT", "PATCH", "DELETE", "POST", "GET") if m not in route.methods]
        if not missing:
            continue
        options = await h.client.options(path, headers=h.auth())
        refused = await h.client.request(missing[0], path, headers=h.auth())
        assert refused.status_code == 405, (path, refused.text)
        assert options.headers["allow"] == refused.headers["allow"], path
        assert options.headers["allow"] == ", ".join(sorted(route.methods)), path
        checked += 1
    assert checked > 50
