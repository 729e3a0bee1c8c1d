"""Operations: rate limits (memory and Redis), health and readiness, metrics, request ids, /me,
and the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from litestar.routes import HTTPRoute
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from orgplane.api.deps import Services
from orgplane.api.ratelimit import RateLimiter
from orgplane.app import build_services, create_app
from orgplane.core.access import scopes
from support.harness import Harness, make_settings, start_harness, stop_harness
from support.redis_db import REDIS_URL

_GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


@asynccontextmanager
async def running(db_url: str, **overrides: Any) -> AsyncIterator[Harness]:
    harness = await start_harness(db_url, **overrides)
    try:
        yield harness
    finally:
        await stop_harness(harness)


@asynccontextmanager
async def bare_app(db_url: str, **overrides: Any) -> AsyncIterator[tuple[Services, Any]]:
    """Another app instance (a second worker) on a database, without bootstrapping it."""
    services = build_services(make_settings(db_url, **overrides))
    app = create_app(services.settings, services)
    services.access_log.start()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://orgplane.test"
    )
    try:
        yield services, client
    finally:
        await client.aclose()
        await services.access_log.stop()
        await services.db.dispose()


def _one(response: httpx.Response, name: str) -> str:
    values = response.headers.get_list(name)
    assert len(values) == 1, (name, values)
    return values[0]


def _assert_limit_headers(response: httpx.Response, limit: int, remaining: int, name: str) -> None:
    assert _one(response, "ratelimit-limit") == str(limit)
    assert _one(response, "ratelimit-remaining") == str(remaining)
    assert 0 <= int(_one(response, "ratelimit-reset")) <= 60
    assert _one(response, "ratelimit-policy") == f'{limit};w=60;name="{name}"'


def _assert_refused(response: httpx.Response, limit: int, name: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 429
    assert problem["type"].endswith("/rate_limited")
    assert f"per {name}" in problem["detail"]
    assert 1 <= int(_one(response, "retry-after")) <= 60
    _assert_limit_headers(response, limit, 0, name)


def _samples(text: str, name: str) -> dict[tuple[str, ...], float]:
    """The samples of one metric, keyed by their label values in label-name order."""
    out: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(v for _, v in sorted(sample.labels.items()))] = sample.value
    return out


# --- rate limits -------------------------------------------------------------------------------


async def test_per_key_limit_refuses_the_fourth_request(db_url):
    async with running(db_url, rate_limit_per_key="3/minute") as h:
        created = await h.client.post(
            f"/orgs/{h.root.org_id}/api_keys",
            json={"name": "second", "scopes": ["orgs:read"]},
            headers=h.auth(),
        )
        assert created.status_code == 201
        _assert_limit_headers(created, 3, 2, "key")
        # Error responses after authentication carry the headers too.
        missing = await h.client.get("/orgs/org_missing", headers=h.auth())
        assert missing.status_code == 404
        _assert_limit_headers(missing, 3, 1, "key")
        third = await h.client.get("/me", headers=h.auth())
        assert third.status_code == 200
        _assert_limit_headers(third, 3, 0, "key")
        assert "retry-after" not in third.headers

        _assert_refused(await h.client.get("/me", headers=h.auth()), 3, "key")
        # The limit is per credential, whatever the route.
        _assert_refused(await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth()), 3, "key")

        # Another key has its own counter; an unauthenticated request is a 401, counted against
        # its address's failed authentications (test_failed_auth.py), never against a key.
        other = await h.client.get("/me", headers=h.auth(created.json()["api_key"]))
        assert other.status_code == 200
        _assert_limit_headers(other, 3, 2, "key")
        anonymous = await h.client.get("/me")
        assert anonymous.status_code == 401
        assert _one(anonymous, "ratelimit-policy").endswith('name="auth-failure"')
        # Public endpoints are not rate limited.
        health = await h.client.get("/healthz")
        assert health.status_code == 200
        assert "ratelimit-limit" not in health.headers

        metrics = (await h.client.get("/metrics")).text
        assert _samples(metrics, "orgplane_rate_limited_total") == {("key",): 2.0}


async def test_per_org_limit_is_shared_by_the_keys_of_an_org(db_url):
    async with running(db_url, rate_limit_per_org="4/minute", rate_limit_per_key="100/minute") as h:
        # Three of the root org's four requests go to setting up a child org with two keys.
        org = await h.create_org(h.root.org_id, "Tenant")
        first = await h.create_key(org["id"], ["orgs:read"])
        second = await h.create_key(org["id"], ["orgs:read"])

        remaining = 3
        for key in (first, first, second, second):
            response = await h.client.get(f"/orgs/{org['id']}", headers=h.auth(key))
            assert response.status_code == 200
            _assert_limit_headers(response, 4, remaining, "org")
            remaining -= 1
        for key in (first, second):
            _assert_refused(await h.client.get("/me", headers=h.auth(key)), 4, "org")

        # The root org's counter is its own: one request left, then refused.
        response = await h.client.get("/me", headers=h.auth())
        assert response.status_code == 200
        _assert_limit_headers(response, 4, 0, "org")
        _assert_refused(await h.client.get("/me", headers=h.auth()), 4, "org")


async def test_in_memory_counters_are_per_process(db_url):
    async with (
        running(db_url, rate_limit_per_key="3/minute") as h,
        bare_app(db_url, rate_limit_per_key="3/minute") as (_, other),
    ):
        for client in (h.client, other):
            for _ in range(3):
                assert (await client.get("/me", headers=h.auth())).status_code == 200
        for client in (h.client, other):
            _assert_refused(await client.get("/me", headers=h.auth()), 3, "key")


async def test_redis_counters_are_shared_by_workers(db_url, redis_db):
    settings = {"rate_limit_per_key": "3/minute", "redis_url": REDIS_URL}
    async with running(db_url, **settings) as h, bare_app(db_url, **settings) as (_, worker_b):
        worker_a = h.client
        expected = [(worker_a, 2), (worker_b, 1), (worker_a, 0)]
        for client, remaining in expected:
            response = await client.get("/me", headers=h.auth())
            assert response.status_code == 200
            _assert_limit_headers(response, 3, remaining, "key")
        _assert_refused(await worker_b.get("/me", headers=h.auth()), 3, "key")
        _assert_refused(await worker_a.get("/me", headers=h.auth()), 3, "key")
        assert redis_db.dbsize() > 0  # the counters really live in Redis


# --- health, readiness, metrics, request ids, /me ----------------------------------------------


async def test_healthz_and_readyz(h):
    health = await h.client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    ready = await h.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok"}


async def test_readyz_is_503_when_the_database_is_unreachable():
    settings = make_settings("postgresql+asyncpg://postgres@127.0.0.1:1/x")
    services = build_services(settings)
    app = create_app(settings, services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orgplane.test") as client:
        try:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            body = ready.json()
            assert body["status"] == "unavailable"
            assert body["database"] and body["database"] != "ok"
            # Liveness does not depend on the database.
            assert (await client.get("/healthz")).status_code == 200
            metrics = (await client.get("/metrics")).text
            requests = _samples(metrics, "orgplane_requests_total")
            assert requests[("GET", "/readyz", "503")] == 1.0
        finally:
            await services.db.dispose()


async def test_metrics_count_requests_by_route_template_and_auth_failures(h):
    child = await h.create_org(h.root.org_id, "Metered")
    for _ in range(2):
        assert (await h.client.get(f"/orgs/{child['id']}", headers=h.auth())).status_code == 200
    children = await h.client.get(f"/orgs/{child['id']}/children", headers=h.auth())
    assert children.status_code == 200
    assert (await h.client.get("/orgs/org_nothere", headers=h.auth())).status_code == 404
    assert (await h.client.get("/me")).status_code == 401
    assert (await h.client.get("/me", headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await h.client.get("/no/such/route")).status_code == 404

    response = await h.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text

    requests = _samples(text, "orgplane_requests_total")  # keys: (method, route, status)
    assert requests[("POST", "/orgs/{org_id}/children", "201")] == 1
    assert requests[("GET", "/orgs/{org_id}", "200")] == 2
    assert requests[("GET", "/orgs/{org_id}", "404")] == 1
    assert requests[("GET", "/orgs/{org_id}/children", "200")] == 1
    assert requests[("GET", "/me", "401")] == 2
    assert requests[("GET", "unmatched", "404")] == 1
    # Routes are templates: no org id (nor the unmatched path) becomes a label.
    for raw in (child["id"], h.root.org_id, "org_nothere", "/no/such/route"):
        assert raw not in text

    failures = _samples(text, "orgplane_auth_failures_total")
    assert failures[("missing credentials",)] == 1
    assert sum(failures.values()) == 2

    latency = _samples(text, "orgplane_request_duration_seconds_count")  # (method, route)
    assert latency[("GET", "/orgs/{org_id}")] == 3
    assert _samples(text, "orgplane_db_pool_size")


async def test_every_response_has_a_request_id(h):
    seen = set()
    for method, path, headers, status in (
        ("GET", "/healthz", {}, 200),
        ("GET", "/me", h.auth(), 200),
        ("GET", "/me", {}, 401),
        ("GET", "/orgs/org_unknown", h.auth(), 404),
        ("GET", "/no/such/route", {}, 404),
        ("DELETE", "/healthz", {}, 405),
        ("PUT", f"/orgs/{h.root.org_id}/customizations", h.auth(), 400),
    ):
        response = await h.client.request(method, path, headers=headers)
        assert response.status_code == status, (method, path, response.text)
        request_id = _one(response, "x-request-id")
        assert _GENERATED_ID.match(request_id)
        if status >= 400:
            assert response.json()["request_id"] == request_id
        seen.add(request_id)
    assert len(seen) == 7


async def test_a_valid_client_request_id_is_echoed_and_an_invalid_one_replaced(h):
    sent = "trace-42.abc_DEF"
    ok = await h.client.get("/me", headers={**h.auth(), "X-Request-Id": sent})
    assert _one(ok, "x-request-id") == sent
    refused = await h.client.get("/me", headers={"X-Request-Id": sent})
    assert refused.status_code == 401
    assert _one(refused, "x-request-id") == sent
    assert refused.json()["request_id"] == sent

    for invalid in ("has spaces in it", "x" * 65, "semi;colon", "new\\nline"):
        response = await h.client.get("/healthz", headers={"X-Request-Id": invalid})
        replaced = _one(response, "x-request-id")
        assert replaced != invalid
        assert _GENERATED_ID.match(replaced)


async def test_me_describes_the_calling_key(h):
    org = await h.create_org(h.root.org_id, "Tenant")
    expires = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    created = await h.client.post(
        f"/orgs/{org['id']}/api_keys",
        json={
            "name": "ops-test",
            "scopes": ["usage:read", "orgs:write"],
            "expires_at": expires.isoformat(),
        },
        headers=h.auth(),
    )
    assert created.status_code == 201, created.text
    key = created.json()

    me = await h.client.get("/me", headers=h.auth(key["api_key"]))
    assert me.status_code == 200
    body = me.json()
    assert body["key_id"] == key["id"]
    assert body["key_name"] == "ops-test"
    assert body["org_id"] == org["id"]
    assert body["scopes"] == ["orgs:read", "orgs:write", "usage:read"]  # write implies read
    assert datetime.fromisoformat(body["expires_at"]) == expires
    assert key["api_key"] not in me.text

    root = (await h.client.get("/me", headers=h.auth())).json()
    assert root["org_id"] == h.root.org_id
    assert root["scopes"] == sorted(scopes.CATALOG)
    assert root["expires_at"] is None

    anonymous = await h.client.get("/me")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")


# --- OpenAPI -----------------------------------------------------------------------------------

NATIVE_OPERATIONS = {
    ("get", "/orgs/{org_id}"),
    ("patch", "/orgs/{org_id}"),
    ("delete", "/orgs/{org_id}"),
    ("post", "/orgs/{org_id}/restore"),
    ("get", "/orgs/{org_id}/children"),
    ("post", "/orgs/{org_id}/children"),
    ("get", "/orgs/{org_id}/descendants"),
    ("post", "/orgs/{org_id}/move"),
    ("get", "/orgs/{org_id}/access_log"),
    ("get", "/orgs/{org_id}/children_audit"),
    ("get", "/orgs/{org_id}/audit"),
    ("get", "/orgs/{org_id}/consumption"),
    ("get", "/orgs/{org_id}/customizations"),
    ("put", "/orgs/{org_id}/customizations"),
    ("patch", "/orgs/{org_id}/customizations"),
    ("post", "/orgs/{org_id}/api_keys"),
    ("get", "/orgs/{org_id}/api_keys"),
    ("delete", "/orgs/{org_id}/api_keys/{key_id}"),
    ("get", "/me"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/schemas/customizations.json"),
}
PUBLIC_OPERATIONS = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/schemas/customizations.json"),
    ("post", "/auth/login"),
    ("post", "/auth/password/reset"),
    ("post", "/auth/email/confirm"),
    ("post", "/invitations/{token}/accept"),
}
_METHODS = {"get", "put", "post", "patch", "delete"}


# The surfaces with an error format of their own (the vendors' dialects and SCIM): their tag and
# path prefix, the security their operations declare, and the status a request without
# credentials gets (Datadog answers 403 where others answer 401).
SURFACES = {"datadog": "/datadog/", "make": "/make/", "sumologic": "/sumologic/", "SCIM": "/scim/"}
SURFACE_SECURITY = {
    "datadog": [{"DatadogApiKey": [], "DatadogApplicationKey": []}],
    "make": [{"MakeToken": []}],
    "sumologic": [{"SumoLogicAccessKey": []}],
    "SCIM": [{"ApiKey": []}],
}
SURFACE_UNAUTHENTICATED = {"datadog": 403, "make": 401, "sumologic": 401, "SCIM": 401}


def _surface(path: str) -> str | None:
    return next((name for name, prefix in SURFACES.items() if path.startswith(prefix)), None)


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in _METHODS
    }


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


async def test_openapi_documents_every_operation_its_errors_and_security(h):
    response = await h.client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    operations = _operations(doc)

    # Every native operation, and exactly the routes the app serves (minus the docs themselves).
    assert set(operations) >= NATIVE_OPERATIONS
    served = {
        (method.lower(), route.path_format)
        for route in h.app.litestar.routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        if handler.resolve_include_in_schema()
        for method in handler.http_methods
        if method.lower() in _METHODS and not route.path_format.startswith("/docs")
    }
    assert set(operations) == served

    assert doc["components"]["securitySchemes"]["ApiKey"]["type"] == "http"
    assert doc["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert doc["security"] == [{"ApiKey": []}]

    ids = [op["operationId"] for op in operations.values()]
    assert len(ids) == len(set(ids))
    for key, operation in operations.items():
        assert operation.get("summary"), key
        surface = _surface(key[1])
        if surface is not None:
            # A dialect's or SCIM's operations: its tag, its credentials, its own error format.
            assert operation["tags"] == [surface], key
            assert operation["security"] == SURFACE_SECURITY[surface], key
            for status in ("401", "403", "404", "429"):
                spec = operation["responses"][status]
                assert spec["description"], (key, status)
                assert "application/problem+json" not in spec.get("content", {}), (key, status)
            continue
        if key in PUBLIC_OPERATIONS:
            assert operation["security"] == [], key
            continue
        assert operation.get("security", doc["security"]) == [{"ApiKey": []}], key
        for status in ("400", "401", "403", "404", "429"):
            spec = operation["responses"][status]
            content = spec["content"]["application/problem+json"]
            assert content["schema"] == {"$ref": "#/components/schemas/Problem"}, (key, status)
            assert spec["description"]
    assert "503" in operations[("get", "/readyz")]["responses"]
    for method in ("put", "patch"):
        body = operations[(method, "/orgs/{org_id}/customizations")]["requestBody"]
        assert body["required"] is True
        assert "application/json" in body["content"]
    merge = operations[("patch", "/orgs/{org_id}/customizations")]["requestBody"]["content"]
    assert "application/merge-patch+json" in merge
    upload = operations[("post", "/datadog/api/v1/org/{public_id}/idp_metadata")]["requestBody"]
    form = upload["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["idp_file"] and form["properties"]["idp_file"]["format"] == "binary"

    # The document is stable: no generated random examples, the same from a fresh app.
    assert "examples" not in json.dumps(doc["components"]["schemas"]["Problem"])
    fresh = create_app(h.services.settings, build_services(h.services.settings))
    assert fresh.litestar.openapi_schema.to_schema() == doc

    schemas = doc["components"]["schemas"]
    assert set(schemas["Problem"]["required"]) >= {"type", "title", "status", "detail"}
    # The events' payload, as webhooks, the events API and the NATS sink carry it.
    event = schemas["Event"]
    assert set(event["properties"]) == {"id", "type", "timestamp", "data"}
    assert event["properties"]["data"] == {"$ref": "#/components/schemas/EventData"}
    assert set(schemas["EventData"]["properties"]) == {
        "org_id", "sequence", "actor", "actor_key_id", "surface", "target_type", "target_id",
        "before", "after", "request_id",
    }  # fmt: skip
    tested = operations[("post", "/orgs/{org_id}/webhooks/{webhook_id}/test")]
    result = tested["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert schemas[result.removeprefix("#/components/schemas/")]["properties"]["event"] == {
        "$ref": "#/components/schemas/Event"
    }
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


async def test_openapi_document_is_valid_openapi_3_1(h):
    validate((await h.client.get("/openapi.json")).json())


async def test_openapi_security_matches_what_the_app_enforces(h):
    """An operation documented as authenticated answers 401 without a key; a public one not."""
    operations = _operations((await h.client.get("/openapi.json")).json())
    for (method, path), _ in sorted(operations.items()):
        url = path.replace("{org_id}", h.root.org_id).replace("{key_id}", "key_unknown")
        url = re.sub(r"\{[A-Za-z_]*[Ii]d\}", "1", url)
        response = await h.client.request(method.upper(), url)
        surface = _surface(path)
        if surface is not None:
            assert response.status_code == SURFACE_UNAUTHENTICATED[surface], (
                method,
                path,
                response.text,
            )
            assert not response.headers["content-type"].startswith("application/problem+json")
            continue
        if (method, path) in PUBLIC_OPERATIONS:
            # A public POST needs a body this bare call does not send: anything but 401 or 5xx.
            if method == "get":
                assert response.status_code == 200, (method, path)
            else:
                assert response.status_code not in (401,) and response.status_code < 500, (
                    method,
                    path,
                    response.text,
                )
        else:
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")


async def test_docs_serve_html(h):
    response = await h.client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.text
    # The page embeds the same document /openapi.json serves.
    doc = (await h.client.get("/openapi.json")).json()
    assert json.dumps(doc["info"], separators=(",", ":")) in response.text
    for path in doc["paths"]:
        assert f'"{path}":' in response.text


async def test_redis_windows_count_in_one_step_and_expire(redis_db):
    """Both of a request's limits are counted in Redis with their windows' clocks set once; a
    window's end frees the limit again."""
    limiter = RateLimiter("2/second", "5/minute", REDIS_URL)
    try:
        first = await limiter.check("key_a", 7)
        assert first is not None and first.name == "key" and first.remaining == 1
        keys = sorted(k.decode() for k in redis_db.keys("*"))
        assert len(keys) == 2
        assert all(0 < redis_db.pttl(k) <= 60_000 for k in keys)
        second = await limiter.check("key_a", 7)
        assert second is not None and second.allowed and second.remaining == 0
        third = await limiter.check("key_a", 7)
        assert third is not None and not third.allowed and third.name == "key"
        assert third.reset_after <= 1
        await asyncio.sleep(1.1)
        fourth = await limiter.check("key_a", 7)
        assert fourth is not None and fourth.allowed
        # The org's window kept counting: 4 of 5.
        org = (await limiter.check("key_b", 7), await limiter.check("key_c", 7))
        assert [v.allowed for v in org if v is not None] == [True, False]
        assert org[1] is not None and org[1].name == "org"
    finally:
        await limiter.close()


async def test_memory_window_reset_never_exceeds_the_window(monkeypatch):
    """At this clock reading, (now + 60) - now is 60.00000000000091 in floating point: the
    reset still says 60 seconds, never 61."""
    monkeypatch.setattr("orgplane.api.ratelimit.time.monotonic", lambda: 8174.326235239371)
    limiter = RateLimiter("3/minute", "", None)
    try:
        verdict = await limiter.check("key_a", 7)
        assert verdict is not None and verdict.allowed
        assert verdict.reset_after == 60
        assert verdict.headers()["RateLimit-Reset"] == "60"
    finally:
        await limiter.close()
