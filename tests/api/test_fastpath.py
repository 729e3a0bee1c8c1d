"""GET /orgs/{id} served outside the framework (api/fastpath.py) answers exactly as the routed
endpoint does: same status, body and headers, one access-log entry and one count per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orgplane.api.fastpath import ORG_ROUTE, FastReads
from orgplane.api.observability import ObservabilityMiddleware
from orgplane.models import access_log
from support.harness import Harness, start_harness, stop_harness
from support.people import make_user

# Headers that differ between two answers to the same request, whoever answers.
VOLATILE = {"x-request-id", "ratelimit-remaining", "ratelimit-reset"}


class CountingApp:
    """The framework behind the fast path, counting what reaches it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


class Pair:
    """Two clients on one harness: through the fast path, and straight to the framework."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.behind = CountingApp(h.app.litestar)
        fast_app = ObservabilityMiddleware(FastReads(self.behind, h.services), h.services.metrics)
        routed_app = ObservabilityMiddleware(h.app.litestar, h.services.metrics)
        base = "http://orgplane.test"
        self.fast = httpx.AsyncClient(transport=httpx.ASGITransport(app=fast_app), base_url=base)
        self.routed = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=routed_app), base_url=base
        )

    async def both(self, path: str, headers: dict[str, str]) -> tuple[httpx.Response, bool]:
        """The fast path's answer (checked equal to the framework's) and whether it was served
        without the framework."""
        before = self.behind.calls
        fast = await self.fast.get(path, headers=headers)
        served_fast = self.behind.calls == before
        routed = await self.routed.get(path, headers=headers)
        assert fast.status_code == routed.status_code, (fast.text, routed.text)
        assert _body(fast) == _body(routed)
        assert _stable(fast.headers) == _stable(routed.headers)
        return fast, served_fast

    async def aclose(self) -> None:
        await self.fast.aclose()
        await self.routed.aclose()


def _body(response: httpx.Response) -> Any:
    """The body; a problem's request_id is the request's own (its X-Request-Id)."""
    if response.headers["content-type"] != "application/problem+json":
        return response.content
    problem = response.json()
    assert problem.pop("request_id") == response.headers["x-request-id"]
    return problem


def _stable(headers: httpx.Headers) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in headers.multi_items() if k not in VOLATILE)


@pytest.fixture
async def pair(h: Harness) -> AsyncIterator[Pair]:
    p = Pair(h)
    try:
        yield p
    finally:
        await p.aclose()


async def test_success_is_served_fast_and_equal(h: Harness, pair: Pair) -> None:
    child = await h.create_org(h.root.org_id, "Child", tags=["a"], settings={"x": 1})
    grandchild = await h.create_org(child["id"], "Grandchild")
    key = await h.create_key(child["id"], ["orgs:read"])
    for org, parent_shown in ((child["id"], False), (grandchild["id"], True)):
        response, served_fast = await pair.both(f"/orgs/{org}", h.auth(key))
        assert response.status_code == 200
        assert served_fast
        assert (response.json()["parent_id"] is not None) is parent_shown
        assert response.headers["etag"].startswith('"')
        assert "ratelimit-policy" in response.headers
        assert response.headers["x-request-id"]


async def test_every_other_answer_comes_from_the_framework(h: Harness, pair: Pair) -> None:
    child = await h.create_org(h.root.org_id, "Child")
    sibling = await h.create_org(h.root.org_id, "Sibling")
    gone = await h.create_org(child["id"], "Gone")
    response = await h.client.delete(f"/orgs/{gone['id']}", headers=h.auth())
    assert response.status_code == 200, response.text
    reader = await h.create_key(child["id"], ["orgs:read"])
    no_orgs_scope = await h.create_key(child["id"], ["audit:read"])
    cases: list[tuple[str, dict[str, str], int]] = [
        (f"/orgs/{child['id']}", {}, 401),
        (f"/orgs/{child['id']}", {"Authorization": "Bearer opk_unknown"}, 401),
        (f"/orgs/{child['id']}", {"Authorization": "Basic !!"}, 401),
        (f"/orgs/{sibling['id']}", h.auth(reader), 404),
        ("/orgs/org_doesnotexist", h.auth(reader), 404),
        (f"/orgs/{gone['id']}", h.auth(reader), 404),
        (f"/orgs/{child['id']}", h.auth(no_orgs_scope), 403),
        ("/orgs/" + "x" * 65, h.auth(reader), 400),
        (f"/orgs/{child['id']}?q=%00", h.auth(reader), 400),
    ]
    for path, headers, status in cases:
        response, served_fast = await pair.both(path, headers)
        assert response.status_code == status, (path, response.text)
        assert not served_fast, path


async def test_user_bound_keys_go_through_the_framework(h: Harness, pair: Pair) -> None:
    user_id = await make_user(h, h.root.org_id, "ada@example.com", ["read-only"])
    key = await h.create_key(h.root.org_id, ["orgs:read"], user_id=user_id)
    response, served_fast = await pair.both(f"/orgs/{h.root.org_id}", h.auth(key))
    assert response.status_code == 200, response.text
    assert not served_fast


async def _access_entries(h: Harness, key_id: str) -> list[Any]:
    await h.services.access_log.flush()
    async with h.services.db.read() as conn:
        result = await conn.execute(access_log.select().where(access_log.c.key_id == key_id))
        return list(result.all())


async def test_one_log_entry_and_one_count_per_request(db_url: str) -> None:
    h = await start_harness(db_url, rate_limit_per_key="3/minute")
    pair = Pair(h)
    try:
        child = await h.create_org(h.root.org_id, "Child")
        response = await h.client.post(
            f"/orgs/{child['id']}/api_keys",
            json={"name": "poller", "scopes": ["orgs:read"]},
            headers=h.auth(),
        )
        key, key_id = response.json()["api_key"], response.json()["id"]
        remaining = []
        for path in (f"/orgs/{child['id']}", "/orgs/org_doesnotexist", f"/orgs/{child['id']}"):
            response = await pair.fast.get(path, headers=h.auth(key))
            remaining.append(response.headers["ratelimit-remaining"])
        assert remaining == ["2", "1", "0"]
        refused = await pair.fast.get(f"/orgs/{child['id']}", headers=h.auth(key))
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-remaining"] == "0"
        entries = await _access_entries(h, key_id)
        assert len(entries) == 4
        assert {e.status for e in entries} == {"SUCCESS"}
        assert {e.path for e in entries} == {f"/orgs/{child['id']}", "/orgs/org_doesnotexist"}
        assert {e.user_agent for e in entries} == {f"python-httpx/{httpx.__version__}"}
    finally:
        await pair.aclose()
        await stop_harness(h)


async def test_metrics_label_the_route_as_the_router_does(h: Harness, pair: Pair) -> None:
    await pair.both(f"/orgs/{h.root.org_id}", h.auth())
    metrics = h.services.metrics.render().decode()
    lines = [
        line
        for line in metrics.splitlines()
        if line.startswith("orgplane_requests_total") and 'status="200"' in line
    ]
    # The fast answer and the routed one are counted under one label.
    assert any(f'route="{ORG_ROUTE}"' in line and line.endswith(" 2.0") for line in lines), lines


async def test_turned_off_by_setting(db_url: str) -> None:
    h = await start_harness(db_url, fast_reads=False)
    try:
        assert not isinstance(h.app.app, FastReads)
        response = await h.client.get(f"/orgs/{h.root.org_id}", headers=h.auth())
        assert response.status_code == 200
    finally:
        await stop_harness(h)


async def test_children_pages_are_served_fast_and_equal(h: Harness, pair: Pair) -> None:
    parent = await h.create_org(h.root.org_id, "Parent")
    for i in range(5):
        await h.create_org(parent["id"], f"Child {i}")
    gone = await h.create_org(parent["id"], "Gone")
    assert (await h.client.delete(f"/orgs/{gone['id']}", headers=h.auth())).status_code == 200
    key = await h.create_key(parent["id"], ["orgs:read"])
    base = f"/orgs/{parent['id']}/children"

    response, served_fast = await pair.both(base, h.auth(key))
    assert served_fast
    assert [o["name"] for o in response.json()["data"]] == [f"Child {i}" for i in range(5)]
    assert response.json()["next_cursor"] is None

    seen = []
    cursor = None
    while True:
        path = f"{base}?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response, served_fast = await pair.both(path, h.auth(key))
        assert response.status_code == 200 and served_fast
        seen += [o["name"] for o in response.json()["data"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"Child {i}" for i in range(5)]


async def test_children_queries_the_fast_path_leaves_to_the_framework(
    h: Harness, pair: Pair
) -> None:
    parent = await h.create_org(h.root.org_id, "Parent")
    await h.create_org(parent["id"], "Child", tags=["blue"])
    key = await h.create_key(parent["id"], ["orgs:read"])
    base = f"/orgs/{parent['id']}/children"
    cases = [
        (f"{base}?tag=blue", 200),
        (f"{base}?filter%5Bname%5D=chi", 200),
        (f"{base}?limit=0", 400),
        (f"{base}?limit=1001", 400),
        (f"{base}?limit=abc", 400),
        (f"{base}?limit=2&limit=3", 200),
        (f"{base}?cursor=!!", 400),
        (f"{base}?cursor=bm90LWEtY3Vyc29y", 400),
        ("/orgs/org_doesnotexist/children", 404),
    ]
    for path, status in cases:
        response, served_fast = await pair.both(path, h.auth(key))
        assert response.status_code == status, (path, response.text)
        assert not served_fast, path
