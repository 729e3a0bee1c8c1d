"""SCIM in /openapi.json: every route with its methods, under its tag and security, with SCIM's
Error for errors; and what the server sends and accepts is what the document says."""

from __future__ import annotations

from typing import Any

import httpx
from jsonschema import Draft202012Validator
from litestar.routes import HTTPRoute

from orgplane.api.scim.common import BASE
from support.harness import Harness

SCIM = "application/scim+json"
ERROR = {"$ref": "#/components/schemas/ScimError"}
METHODS = {"get", "post", "put", "patch", "delete"}


async def _document(h: Harness) -> dict[str, Any]:
    response = await h.client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_every_scim_route_is_documented_with_its_methods(h: Harness) -> None:
    document = await _document(h)
    served = {
        (route.path_format, method.lower())
        for route in h.app.litestar.routes
        if isinstance(route, HTTPRoute) and route.path_format.startswith(BASE)
        for method in route.methods
        if method.lower() in METHODS
    }
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        if path.startswith(BASE)
        for method in item
        if method in METHODS
    }
    assert documented == served
    assert {method for _, method in served} == METHODS

    for path, method in sorted(documented):
        operation = document["paths"][path][method]
        assert operation["tags"] == ["SCIM"], (path, method)
        assert operation["security"] == [{"ApiKey": []}], (path, method)
        for status, response in operation["responses"].items():
            if status.startswith("2"):
                assert list(response.get("content", {SCIM: None})) == [SCIM], (path, method)
            else:
                assert response["content"] == {SCIM: {"schema": ERROR}}, (path, method, status)
        if method in ("post", "put", "patch"):
            content = operation["requestBody"]["content"]
            assert list(content) == [SCIM, "application/json"], (path, method)
            assert content[SCIM] == content["application/json"], (path, method)
    assert "SCIM" in {tag["name"] for tag in document["tags"]}
    error = document["components"]["schemas"]["ScimError"]
    assert error["properties"]["schemas"]["items"]["const"] == (
        "urn:ietf:params:scim:api:messages:2.0:Error"
    )
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    list_parameters = {p["name"] for p in document["paths"][f"{BASE}/Users"]["get"]["parameters"]}
    assert list_parameters == {
        "filter",
        "startIndex",
        "count",
        "sortBy",
        "sortOrder",
        "attributes",
        "excludedAttributes",
    }


class Checked:
    """Sends SCIM requests, and checks each body sent and received against the document."""

    def __init__(self, h: Harness, document: dict[str, Any]) -> None:
        self.h = h
        self.document = document
        self.checked = 0

    def _valid(self, schema: dict[str, Any], instance: Any, where: str) -> None:
        validator = Draft202012Validator({**schema, "components": self.document["components"]})
        errors = [e.message for e in validator.iter_errors(instance)]
        assert not errors, (where, errors, instance)
        self.checked += 1

    async def __call__(
        self, method: str, template: str, status: int, body: Any = None, **values: str
    ) -> httpx.Response:
        operation = self.document["paths"][template][method]
        if body is not None:
            schema = operation["requestBody"]["content"][SCIM]["schema"]
            self._valid(schema, body, f"{method} {template} request")
        response = await self.h.client.request(
            method.upper(),
            template.format(**values),
            json=body,
            headers={**self.h.auth(), "Content-Type": SCIM},
        )
        assert response.status_code == status, (method, template, response.text)
        documented = operation["responses"][str(status)]
        if "content" in documented:
            assert response.headers["content-type"].startswith(SCIM)
            schema = documented["content"][SCIM]["schema"]
            self._valid(schema, response.json(), f"{method} {template} {status}")
        for header in documented.get("headers", {}):
            assert header in response.headers, (method, template, header)
        return response


async def test_what_scim_sends_and_accepts_is_what_the_document_says(h: Harness) -> None:
    send = Checked(h, await _document(h))
    user_schema = "urn:ietf:params:scim:schemas:core:2.0:User"
    patch_op = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

    await send("get", f"{BASE}/ServiceProviderConfig", 200)
    await send("get", f"{BASE}/ResourceTypes", 200)
    await send("get", f"{BASE}/ResourceTypes/{{name}}", 200, name="User")
    await send("get", f"{BASE}/Schemas", 200)
    await send("get", f"{BASE}/Schemas/{{schema_id}}", 200, schema_id=user_schema)

    ada = {
        "schemas": [user_schema],
        "userName": "ada@example.com",
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "title": "Countess",
    }
    user = (await send("post", f"{BASE}/Users", 201, ada)).json()
    await send("post", f"{BASE}/Users", 409, ada)
    group = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Engines",
        "members": [{"value": user["id"]}],
    }
    created = (await send("post", f"{BASE}/Groups", 201, group)).json()

    user_ref = {"user_id": user["id"]}
    group_ref = {"group_id": created["id"]}
    await send("get", f"{BASE}/Users/{{user_id}}", 200, **user_ref)
    await send("get", f"{BASE}/Users", 200)
    await send("post", f"{BASE}/Users/.search", 200, {"filter": 'userName sw "ada"', "count": 5})
    await send("post", f"{BASE}/.search", 200, {"sortBy": "userName"})
    change = {
        "schemas": [patch_op],
        "Operations": [{"op": "replace", "path": "title", "value": "X"}],
    }
    await send("patch", f"{BASE}/Users/{{user_id}}", 200, change, **user_ref)
    await send("put", f"{BASE}/Users/{{user_id}}", 200, {**ada, "active": False}, **user_ref)
    await send("get", f"{BASE}/Groups/{{group_id}}", 200, **group_ref)
    await send("get", f"{BASE}/Groups", 200)
    rename = {
        "schemas": [patch_op],
        "Operations": [{"op": "replace", "value": {"displayName": "Y"}}],
    }
    await send("patch", f"{BASE}/Groups/{{group_id}}", 200, rename, **group_ref)
    await send("put", f"{BASE}/Groups/{{group_id}}", 200, group, **group_ref)

    bad_filter = await h.client.get(
        f"{BASE}/Users", params={"filter": "userName xx"}, headers=h.auth()
    )
    assert bad_filter.status_code == 400 and bad_filter.json()["scimType"] == "invalidFilter"
    await send("get", f"{BASE}/Users/{{user_id}}", 404, user_id="usr_missing")
    await send("delete", f"{BASE}/Groups/{{group_id}}", 409, **group_ref)  # held by Ada
    await send("delete", f"{BASE}/Users/{{user_id}}", 204, **user_ref)
    await send("delete", f"{BASE}/Groups/{{group_id}}", 204, **group_ref)
    assert send.checked > 25


def _component(components: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any] | None:
    """The component schema a property holds, itself or as the items of an array."""
    for option in prop.get("oneOf", [prop]):
        ref = option.get("$ref") or option.get("items", {}).get("$ref")
        if ref:
            component: dict[str, Any] = components[ref.rsplit("/", 1)[-1]]
            return component
    return None


async def test_the_documented_resources_are_the_published_scim_schemas(h: Harness) -> None:
    """ScimUser and ScimGroup have the attributes /Schemas publishes, read-only where SCIM's
    schema says so, and no sub-attribute the SCIM schema does not have."""
    components = (await _document(h))["components"]["schemas"]
    for name in ("User", "Group"):
        published = await h.client.get(
            f"{BASE}/Schemas/urn:ietf:params:scim:schemas:core:2.0:{name}", headers=h.auth()
        )
        attributes = {a["name"]: a for a in published.json()["attributes"]}
        documented = components[f"Scim{name}"]["properties"]
        # Besides its attributes, a resource has SCIM's common ones (RFC 7643 §3.1).
        assert set(documented) == {*attributes, "schemas", "id", "meta"}, name
        for attribute, definition in attributes.items():
            prop = documented[attribute]
            read_only = definition["mutability"] == "readOnly"
            assert prop.get("readOnly", False) == read_only, (name, attribute)
            nested = _component(components, prop)
            if nested is not None:
                subs = {s["name"] for s in definition["subAttributes"]}
                assert set(nested["properties"]) <= subs, (name, attribute)
        assert documented["id"]["readOnly"] and documented["meta"]["readOnly"]
