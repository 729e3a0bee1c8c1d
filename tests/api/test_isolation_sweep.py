"""Tenant isolation, swept over every path of ``/openapi.json``: for a key, whatever lies outside
its subtree answers exactly as something that does not exist.

One prober org sits in the middle of a tree, with keys of every kind. The things it probes
belong to its parent, its sibling, its sibling's child and another tenant's root: an org, a
member, a custom role, an API key and a pending invitation in each. Every operation that takes
an id in its path is sent twice for each of those places and each id it takes: once naming the
place's thing (in the surface's own format: a public id, Make's integer key, a Sumo Logic org
id), once naming an id of the same format that exists nowhere. Every other id in the path is
the prober's own. The two answers must have the same status and the same body, apart from the
request id, Sumo Logic's error id and the id sent; and no answer names any id of the place.
A handful of operations that take an id in their body are probed the same way.

Writes carry a body built from the operation's schema so that validation passes and the lookup
is what answers; nothing may be written by the whole sweep.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import sqlalchemy as sa

from orgplane.core.bootstrap import create_root_with_admin_key
from orgplane.models import users
from support.harness import Harness
from support.keys import surface_headers
from support.people import PASSWORD

_ORG_PARAMS = {"org_id", "child_id", "public_id", "organizationId", "childOrganizationId", "orgId"}


@dataclass
class Place:
    """An org and one thing of each kind in it, as the native API named them."""

    org: dict[str, Any]
    user: str
    user_key: int
    role: str
    api_key: str
    invitation: str
    child: str = ""

    def ids(self) -> set[str]:
        """Every id of the place a body must not show unless it was sent."""
        org = self.org
        return {org["id"], org["uuid"], org["sumo_id"], self.user, self.role, self.api_key}

    def ref(self, surface: str, kind: str) -> str:
        """The id of the place's thing of ``kind`` as ``surface`` names it."""
        if kind == "org":
            by_surface = {"make": str(self.org["key"]), "sumologic": self.org["sumo_id"]}
            return by_surface.get(surface, self.org["id"])
        if kind == "user":
            return str(self.user_key) if surface == "make" else self.user
        things = {"role": self.role, "key": self.api_key, "invitation": self.invitation}
        return things[kind] if kind != "child" else self.child


def _kind(template: str, name: str) -> str | None:
    """What a path parameter names, or None for what is not a tenant's (meters, tokens)."""
    if name in _ORG_PARAMS:
        return "org"
    if name in ("user_id", "userId") or (name == "id" and "/users/" in template):
        return "user"
    if name in ("role_id", "roleId", "group_id") or (name == "id" and "/roles/" in template):
        return "role"  # SCIM's groups are roles
    return {"key_id": "key", "invitation_id": "invitation"}.get(name)


def _nowhere(ref: str) -> str:
    """An id of the same format as ``ref`` that names nothing: its last eight characters drawn
    again from the same classes (digits, hex letters of the same case)."""
    if ref.isdigit():
        return str(10**9 + random.randrange(10**6))
    head, tail = ref[:-8], ref[-8:]

    def again(c: str) -> str:
        if c.isdigit():
            return random.choice("0123456789")
        letters = random.choice("abcdef")
        return letters.upper() if c.isupper() else letters

    return head + "".join(again(c) for c in tail)


def _example(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A value the schema accepts, with only what it requires."""
    ref = schema.get("$ref")
    if ref:
        return _example(document, document["components"]["schemas"][ref.rsplit("/", 1)[-1]])
    for options in ("oneOf", "anyOf"):
        if options in schema:
            chosen = [o for o in schema[options] if o.get("type") != "null"]
            return _example(document, chosen[0]) if chosen else None
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    if schema.get("examples"):
        return schema["examples"][0]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            name: _example(document, properties.get(name, {}))
            for name in schema.get("required", [])
        }
    if kind == "array":
        return [_example(document, schema.get("items", {}))] * schema.get("minItems", 0)
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    if schema.get("format") == "date-time":
        return datetime.now(UTC).isoformat()
    if schema.get("format") == "date":
        return datetime.now(UTC).date().isoformat()
    return "probe@example.com" if kind == "string" else None


def _body(document: dict[str, Any], method: str, operation: dict[str, Any], path_id: str) -> Any:
    """A body the operation accepts; a JSON:API update's ``data.id`` repeats the path's id."""
    content = operation.get("requestBody", {}).get("content", {})
    for media in content.values():
        body = _example(document, media.get("schema", {}))
        data = body.get("data") if isinstance(body, dict) else None
        if method == "patch" and isinstance(data, dict) and "id" in data:
            body["data"]["id"] = path_id
        return body
    return None


def _surface(template: str) -> str:
    for prefix, surface in (
        ("/datadog/", "datadog"),
        ("/make/", "make"),
        ("/sumologic/", "sumologic"),
        ("/scim/", "scim"),
    ):
        if template.startswith(prefix):
            return surface
    return "native"


def _plain(response: httpx.Response, sent: str) -> tuple[int, str, str]:
    """The answer with what differs on every request, and the id sent, taken out."""
    text = re.sub(rf"(?<![0-9A-Za-z]){re.escape(sent)}(?![0-9A-Za-z])", "<id>", response.text)
    request_id = response.headers.get("x-request-id")
    if request_id:
        text = text.replace(request_id, "<request>")
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        if isinstance(body, dict) and "errors" in body and isinstance(body.get("id"), str):
            # Sumo Logic's envelope carries an error id of its own for each answer.
            text = text.replace(body["id"], "<error id>")
    return response.status_code, response.headers.get("content-type", ""), text


async def _place(h: Harness, org: dict[str, Any], key: str, name: str) -> Place:
    """A member, a custom role, a key and a pending invitation in ``org``, made with ``key``."""
    auth = h.auth(key)
    org_id = org["id"]

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await h.client.post(f"/orgs/{org_id}/{path}", json=body, headers=auth)
        assert response.status_code in (200, 201), response.text
        answer: dict[str, Any] = response.json()
        return answer

    invited = await post(
        "invitations", {"email": f"member@{name}.example.com", "roles": ["standard"]}
    )
    accepted = await h.client.post(
        f"/invitations/{invited['token']}/accept", json={"password": PASSWORD}
    )
    assert accepted.status_code == 200, accepted.text
    user = accepted.json()["user_id"]
    async with h.services.db.read() as conn:
        user_key = (
            await conn.execute(sa.select(users.c.id).where(users.c.public_id == user))
        ).scalar_one()
    role = await post("roles", {"name": f"{name} auditors", "capabilities": ["viewAuditLog"]})
    api_key = await post("api_keys", {"name": f"{name} key", "scopes": ["orgs:read"]})
    pending = await post(
        "invitations", {"email": f"pending@{name}.example.com", "roles": ["standard"]}
    )
    return Place(org, user, int(user_key), role["id"], api_key["id"], pending["id"])


async def _org(h: Harness, parent: str, name: str, key: str | None = None) -> dict[str, Any]:
    return await h.create_org(parent, name, key)


# The path and body of a request that names the id it is given.
Asking = Callable[[str], tuple[str, Any]]


@dataclass
class Sweep:
    h: Harness
    credentials: dict[str, dict[str, str]]
    prober: Place
    places: dict[str, Place]
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    answers: Counter[int] = field(default_factory=Counter)

    async def probe(
        self, surface: str, method: str, place: Place, sent: str, ask: Asking, what: str
    ) -> None:
        """Send the request naming ``place``'s thing and the one naming nowhere; compare."""
        nowhere = _nowhere(sent)
        headers = self.credentials[surface]
        answers = []
        for ref in (sent, nowhere):
            path, body = ask(ref)
            answers.append(await self.h.client.request(method, path, json=body, headers=headers))
        seen, missing = answers
        self.sent += 2
        self.answers[seen.status_code] += 1
        shown = [i for i in place.ids() - {sent} if i in seen.text]
        if _plain(seen, sent) != _plain(missing, nowhere) or shown:
            self.failures.append(
                f"{method} {ask(sent)[0]} ({what}): {seen.status_code} {seen.text[:160]!r} "
                f"vs {missing.status_code} {missing.text[:160]!r}; shows {shown}"
            )


async def _sweep(h: Harness) -> Sweep:
    root = h.root.org_id
    prober_org = await _org(h, root, "Prober")
    sibling_org = await _org(h, root, "Sibling")
    cousin_org = await _org(h, sibling_org["id"], "Cousin")
    own_child = await _org(h, prober_org["id"], "Own child")
    other = await h.services.db.transaction(create_root_with_admin_key, name="Other tenant")
    other_response = await h.client.get(f"/orgs/{other.org_id}", headers=h.auth(other.api_key))
    root_response = await h.client.get(f"/orgs/{root}", headers=h.auth())
    places = {
        "parent": await _place(h, root_response.json(), h.root.api_key, "parent"),
        "sibling": await _place(h, sibling_org, h.root.api_key, "sibling"),
        "cousin": await _place(h, cousin_org, h.root.api_key, "cousin"),
        "other tenant": await _place(h, other_response.json(), other.api_key, "other"),
    }
    prober = await _place(h, prober_org, h.root.api_key, "prober")
    prober.child = own_child["id"]
    credentials = await surface_headers(h, prober_org["id"])
    return Sweep(h, credentials, prober, places)


def _in_path(document: dict[str, Any], template: str, own: dict[str, str], name: str,
             method: str, operation: dict[str, Any], ref: str) -> tuple[str, Any]:  # fmt: skip
    """The request to ``operation`` with ``ref`` as its parameter ``name``, the rest ``own``."""
    values = {**own, name: ref}
    path = re.sub(r"\{([^}]+)\}", lambda m: values[m.group(1)], template)
    return path, _body(document, method, operation, ref)


async def test_every_path_answers_an_unreachable_id_as_a_missing_one(
    h: Harness, relaxed: None
) -> None:
    sweep = await _sweep(h)
    document = (await h.client.get("/openapi.json")).json()
    before = await h.written()
    operations = 0
    for template, item in document["paths"].items():
        surface = _surface(template)
        names = re.findall(r"\{([^}]+)\}", template)
        kinds = {name: _kind(template, name) for name in names}
        if not any(kinds.values()) or "token" in names:
            continue
        own = {
            name: sweep.prober.ref(surface, kind) if kind else "operations"
            for name, kind in kinds.items()
        }
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            operations += 1
            for name, kind in kinds.items():
                if kind is None:
                    continue
                ask = partial(_in_path, document, template, own, name, method, operation)
                for where, place in sweep.places.items():
                    sent = place.ref(surface, kind)
                    what = f"{name} of the {where}"
                    await sweep.probe(surface, method.upper(), place, sent, ask, what)
    assert sweep.failures == [], "\n".join(sweep.failures)
    assert await h.written() == before
    # Most probes reach the lookup (a 404); the rest are refused identically before it, for
    # a rule that holds whatever the id names (a meter the prober has no limit for, say).
    assert operations > 80, operations
    assert sweep.answers[404] > 0.8 * sum(sweep.answers.values()), sweep.answers
    print(f"isolation sweep: {operations} operations, {sweep.sent} requests, {dict(sweep.answers)}")


# Operations that take an id in their body: (surface, method, path, body), with ``{id}`` where
# the id goes and ``{own:<kind>}`` for the prober's own.
_BODY_REFERENCES: list[tuple[str, str, str, str, Any]] = [
    ("org", "native", "POST", "/orgs/{own:child}/move", {"parent_id": "{id}"}),
    ("user", "native", "POST", "/orgs/{own:org}/api_keys",
     {"name": "bound", "scopes": ["orgs:read"], "user_id": "{id}"}),
    ("role", "native", "POST", "/orgs/{own:org}/invitations",
     {"email": "new@prober.example.com", "roles": ["{id}"]}),
    ("role", "native", "PATCH", "/orgs/{own:org}/users/{own:user}", {"roles": ["{id}"]}),
    ("org", "sumologic", "POST", "/sumologic/api/v1/organizations/usages", ["{id}"]),
    ("role", "sumologic", "POST", "/sumologic/api/v1/users",
     {"firstName": "N", "lastName": "M", "email": "new@prober.example.com", "roleIds": ["{id}"]}),
    ("user", "sumologic", "POST", "/sumologic/api/v1/roles",
     {"name": "probe", "users": ["{id}"], "capabilities": []}),
    ("user", "datadog", "POST", "/datadog/api/v2/roles/{own:role}/users",
     {"data": {"type": "users", "id": "{id}"}}),
    ("user", "datadog", "POST", "/datadog/api/v2/user_invitations",
     {"data": [{"type": "user_invitations",
                "relationships": {"user": {"data": {"type": "users", "id": "{id}"}}}}]}),
]  # fmt: skip


def _in_body(path: str, body: Any, surface: str, own: Place, ref: str) -> tuple[str, Any]:
    return _substitute(path, surface, own, ""), _substitute(body, surface, own, ref)


def _substitute(value: Any, surface: str, own: Place, sent: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, surface, own, sent) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, surface, own, sent) for v in value]
    if isinstance(value, str):
        value = value.replace("{id}", sent)
        return re.sub(r"\{own:(\w+)\}", lambda m: own.ref(surface, m.group(1)), value)
    return value


async def test_an_id_in_a_body_answers_unreachable_as_missing(h: Harness, relaxed: None) -> None:
    sweep = await _sweep(h)
    before = await h.written()
    for kind, surface, method, path, body in _BODY_REFERENCES:
        ask = partial(_in_body, path, body, surface, sweep.prober)
        for where, place in sweep.places.items():
            sent = place.ref(surface, kind)
            what = f"{kind} of the {where} in the body"
            await sweep.probe(surface, method, place, sent, ask, what)
    assert sweep.failures == [], "\n".join(sweep.failures)
    assert await h.written() == before
    assert not {200, 201} & set(sweep.answers), sweep.answers
