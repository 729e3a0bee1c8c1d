"""Hostile input never answers 500: each class of bad input is a 4xx in the answering surface's
own error format, and a refused write leaves the audit trail and the ledger as they were."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from typing import Any

import httpx
import orjson
from litestar import Request
from litestar.routes import HTTPRoute

from orgplane.api import surfaces
from support.harness import Harness
from support.keys import surface_headers
from support.problems import problem

JSON = {"Content-Type": "application/json"}


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def _refused(h: Harness, method: str, url: str, body: bytes, field: str) -> dict[str, Any]:
    before = await h.written()
    response = await h.client.request(method, url, content=body, headers={**h.auth(), **JSON})
    found = problem(response, 400, field)
    assert await h.written() == before
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
    before = await h.written()
    response = await h.client.put(
        url, content=b'{"n": 18446744073709551616}', headers={**h.auth(), **JSON}
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await h.written() == before


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
    before = await h.written()
    moved = await h.client.post(
        f"/orgs/{child['id']}/move", json={"parent_id": "a\x00b"}, headers=h.auth()
    )
    problem(moved, 404)
    assert await h.written() == before
    cursor = base64.urlsafe_b64encode(orjson.dumps(["\x00", 1])).decode().rstrip("=")
    listed = await h.client.get(f"/orgs/{root}/users", params={"cursor": cursor}, headers=h.auth())
    problem(listed, 400, "query.cursor")


async def test_surfaces_answer_unmatched_routes_in_their_own_format(h: Harness) -> None:
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
    scim_error = ["urn:ietf:params:scim:api:messages:2.0:Error"]
    for path in ("/scim/v2", "/scim/v2/Nothing", "/scim/v2/Users/a/b"):
        response = await h.client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/scim+json")
        assert response.json() == {
            "schemas": scim_error,
            "status": "404",
            "detail": f"no route GET {path}",
        }
    response = await h.client.put("/scim/v2/Users", headers=h.auth())
    assert response.status_code == 405
    assert response.json()["schemas"] == scim_error and response.json()["status"] == "405"
    assert response.headers["allow"] == "GET, OPTIONS, POST"


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


# The generated sweep: each class of bad input to every operation of /openapi.json.

_DATETIME_OUT_OF_RANGE = "0001-01-01T00:00:00+23:59"
_NUL_CURSOR = base64.urlsafe_b64encode(orjson.dumps(["\x00", 1])).decode().rstrip("=")
_BODIES = {
    "invalid UTF-8": b'{"name": "a\xff\xfe", "settings": {}}',
    "nested 1,000 deep": _nested(1000),
    "nested 100,000 deep": b'{"name": ' + _nested(100_000) + b"}",
}
# Documents no store can hold, sent where the operation takes a document (settings,
# customizations); elsewhere an unknown member may be ignored, as some vendors' APIs do.
_DOCUMENTS = {
    "integer past 64 bits": b'{"n": 18446744073709551616}',
    "integer below -2^63": b'{"n": -9223372036854775809}',
    "document 300 deep": b'{"a":' * 300 + b"1" + b"}" * 300,
}
_DOCUMENT_MEMBERS = ("settings", "customizations")


def _free_form(document: dict[str, Any], schema: dict[str, Any]) -> bool:
    """Whether ``schema`` is an object of any members (an orgplane document)."""
    for option in schema.get("oneOf", [schema]):
        ref = option.get("$ref", "")
        if ref:
            option = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        if option.get("type") == "object" and not option.get("properties"):
            return True
    return False


def _document_members(document: dict[str, Any], operation: dict[str, Any]) -> list[str] | None:
    """The members of the operation's body that hold a document ([] for a body that is one),
    or None when it takes no document."""
    for content in operation.get("requestBody", {}).get("content", {}).values():
        schema = content.get("schema", {})
        ref = schema.get("$ref", "")
        if ref:
            schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        properties = schema.get("properties")
        if properties is None and schema.get("type") == "object":
            return []
        members = [
            m
            for m in _DOCUMENT_MEMBERS
            if _free_form(document, (properties or {}).get(m, {"properties": {}}))
        ]
        if members:
            return members
    return None


def _surface(path: str) -> str:
    for prefix, surface in (
        ("/datadog/", "datadog"),
        ("/make/api/v2/", "make"),
        ("/sumologic/api/", "sumologic"),
        ("/scim/", "scim"),
    ):
        if path.startswith(prefix):
            return surface
    return "native"


def _in_surface_format(surface: str, response: httpx.Response) -> bool:
    """Whether ``response`` is an error in the surface's own format."""
    if surface == "native":
        return response.headers.get("content-type", "").startswith("application/problem+json")
    body = response.json()
    if surface == "datadog":
        return isinstance(body.get("errors"), list) and all(
            isinstance(e, str) for e in body["errors"]
        )
    if surface == "make":
        return {"detail", "message", "code"} <= set(body)
    if surface == "sumologic":
        return "id" in body and isinstance(body.get("errors"), list)
    return "urn:ietf:params:scim:api:messages:2.0:Error" in body.get("schemas", [])


def _cases(
    document: dict[str, Any], operation: dict[str, Any], path: str
) -> list[tuple[str, str, dict[str, str], bytes]]:
    """(class, path, query, body) for each class of bad input this operation takes."""
    parameters = operation.get("parameters", [])
    cases: list[tuple[str, str, dict[str, str], bytes]] = []
    if "requestBody" in operation:
        cases += [(name, path, {}, body) for name, body in _BODIES.items()]
    members = _document_members(document, operation)
    for name, bad in _DOCUMENTS.items():
        if members == []:
            cases.append((name, path, {}, bad))
        for member in members or []:
            cases.append(
                (f"{member}: {name}", path, {}, b'{"name": "n", "%s": %s}' % (member.encode(), bad))
            )
    for p in parameters:
        schema = p.get("schema", {})
        formats = {schema.get("format")} | {s.get("format") for s in schema.get("oneOf", [])}
        if p.get("in") == "query" and "date-time" in formats:
            cases.append(
                (f"{p['name']} out of range", path, {p["name"]: _DATETIME_OUT_OF_RANGE}, b"")
            )
        if p.get("in") == "query" and p["name"] == "cursor":
            cases.append((f"{p['name']} with NUL", path, {p["name"]: _NUL_CURSOR}, b""))
    if any(p.get("in") == "path" for p in parameters):
        with_nul = re.sub(r"\{[^}]+\}", "a%00b", operation["x-template"], count=1)
        cases.append(("NUL in the path", with_nul, {}, b""))
    return cases


async def test_every_operation_refuses_every_class_of_bad_input_with_a_4xx(
    h: Harness, relaxed: None
) -> None:
    root = h.root.org_id
    credentials = await surface_headers(h, root)
    document = (await h.client.get("/openapi.json")).json()
    before = await h.written()
    sent = 0
    classes: Counter[str] = Counter()
    surfaces: Counter[str] = Counter()
    failures: list[str] = []
    for template, item in document["paths"].items():
        path = re.sub(r"\{[^}]*(?:id|Id|key|Key)[^}]*\}", root, template)
        path = re.sub(r"\{[^}]+\}", "x", path)
        surface = _surface(template)
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            for name, url, query, body in _cases(
                document, {**operation, "x-template": template}, path
            ):
                response = await h.client.request(
                    method.upper(),
                    url,
                    params=query,
                    content=body or None,
                    headers={**credentials[surface], **JSON},
                )
                sent += 1
                classes[name.split(": ")[-1]] += 1
                surfaces[surface] += 1
                if not 400 <= response.status_code < 500 or not _in_surface_format(
                    surface, response
                ):
                    failures.append(
                        f"{method.upper()} {template} ({name}): "
                        f"{response.status_code} {response.text[:120]}"
                    )
    assert not failures, "\n".join(failures)
    # Every class reached operations of every surface that takes it (~300 requests).
    assert set(classes) >= {*_BODIES, *_DOCUMENTS, "since out of range", "cursor with NUL"}
    assert set(surfaces) == {"native", "datadog", "make", "sumologic", "scim"}, surfaces
    assert sent > 250, sent
    assert await h.written() == before


def test_an_unexpected_error_answers_500_in_the_surface_format() -> None:
    def request(path: str) -> Request[Any, Any, Any]:
        return Request({"type": "http", "method": "GET", "path": path, "headers": [],
                        "query_string": b"", "root_path": "", "scheme": "http",
                        "server": ("orgplane.test", 80), "state": {}})  # fmt: skip

    failure = RuntimeError("a bug")
    make = surfaces.handle_unexpected(request("/make/api/v2/organizations"), failure)
    assert make.status_code == 500
    assert orjson.loads(make.content)["code"] == "SC500"
    datadog = surfaces.handle_unexpected(request("/datadog/api/v1/org"), failure)
    assert orjson.loads(datadog.content) == {"errors": [surfaces.UNEXPECTED]}
    sumo = surfaces.handle_unexpected(request("/sumologic/api/v1/organizations"), failure)
    assert orjson.loads(sumo.content)["errors"][0]["code"] == "internal.error"
    scim = surfaces.handle_unexpected(request("/scim/v2/Users"), failure)
    assert scim.status_code == 500 and scim.media_type == "application/scim+json"
    assert orjson.loads(scim.content)["detail"] == surfaces.UNEXPECTED
    native = surfaces.handle_unexpected(request("/orgs/x"), failure)
    assert native.media_type == "application/problem+json"
    assert orjson.loads(native.content)["status"] == 500
