"""GET /orgs/{id}/events and its Server-Sent Events stream: the audit log of a subtree, read
forward from a cursor, as the events every consumer receives."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from httpx_sse import aconnect_sse

from orgplane.api.native import events as events_api
from orgplane.core.events import queries
from orgplane.models import audit_log, orgs
from support.harness import Harness, LiveServer
from support.problems import problem


async def _all(h: Harness, org: str, key: str | None = None, **params: Any) -> list[dict[str, Any]]:
    """Every event from the start, a page at a time, until the cursor stops moving."""
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        query = {**params, **({"after": cursor} if cursor else {})}
        response = await h.client.get(f"/orgs/{org}/events", params=query, headers=h.auth(key))
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body["next_cursor"], str) and body["next_cursor"]
        seen += body["data"]
        if body["next_cursor"] == cursor:
            return seen
        cursor = body["next_cursor"]
    raise AssertionError("the cursor kept moving")


async def _log(h: Harness) -> list[Any]:
    """The tenant's audit log in commit order."""
    async with h.services.db.read() as conn:
        root_id = (
            await conn.execute(sa.select(orgs.c.id).where(orgs.c.public_id == h.root.org_id))
        ).scalar_one()
        rows = await conn.execute(
            sa.select(audit_log.c.seq, audit_log.c.action, audit_log.c.hash)
            .where(audit_log.c.root_id == root_id)
            .order_by(audit_log.c.seq)
        )
        return list(rows)


async def _tree(h: Harness) -> dict[str, dict[str, Any]]:
    """A root with two children and a grandchild, credits allocated to each child."""
    root = h.root.org_id
    a = await h.create_org(root, "A")
    b = await h.create_org(root, "B")
    a1 = await h.create_org(a["id"], "A1")
    response = await h.client.put(
        f"/orgs/{root}/limits/credits", json={"amount": 1000}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    for child in (a, b):
        response = await h.client.put(
            f"/orgs/{root}/children/{child['id']}/allocations/credits",
            json={"amount": 100},
            headers=h.auth(),
        )
        assert response.status_code == 200, response.text
    await h.client.patch(f"/orgs/{b['id']}", json={"name": "B renamed"}, headers=h.auth())
    return {"root": {"id": root}, "a": a, "b": b, "a1": a1}


async def test_pages_cover_every_event_once_in_commit_order(h: Harness) -> None:
    await _tree(h)
    log = await _log(h)
    assert len(log) >= 8
    events = await _all(h, h.root.org_id, limit=3)
    assert [e["data"]["sequence"] for e in events] == [r.seq for r in log]
    assert [e["type"] for e in events] == [r.action for r in log]
    assert [e["id"] for e in events] == ["evt_" + r.hash[:32] for r in log]
    first = events[0]
    assert set(first) == {"id", "type", "timestamp", "data"}
    assert first["timestamp"].endswith("Z")
    assert set(first["data"]) == {
        "org_id", "sequence", "actor", "actor_key_id", "surface", "target_type", "target_id",
        "before", "after", "request_id",
    }  # fmt: skip
    assert first["data"]["surface"] in ("api", "cli", None)

    # At the end, the cursor stays where it is; a new event is the next page's only one.
    last = (await h.client.get(f"/orgs/{h.root.org_id}/events", headers=h.auth())).json()
    while True:
        page = (
            await h.client.get(
                f"/orgs/{h.root.org_id}/events",
                params={"after": last["next_cursor"]},
                headers=h.auth(),
            )
        ).json()
        if page["next_cursor"] == last["next_cursor"]:
            assert page["data"] == []
            break
        last = page
    await h.create_org(h.root.org_id, "Later")
    page = (
        await h.client.get(
            f"/orgs/{h.root.org_id}/events", params={"after": last["next_cursor"]}, headers=h.auth()
        )
    ).json()
    assert [e["type"] for e in page["data"]] == ["org.created"]
    assert page["data"][0]["data"]["after"]["name"] == "Later"


async def test_a_page_scans_a_bounded_stretch_and_its_cursor_still_advances(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = await _tree(h)
    for i in range(5):
        await h.client.patch(f"/orgs/{tree['b']['id']}", json={"name": f"B{i}"}, headers=h.auth())
    await h.client.patch(f"/orgs/{tree['a1']['id']}", json={"name": "A1 late"}, headers=h.auth())
    expected = [
        e
        for e in await _all(h, h.root.org_id)
        if e["data"]["org_id"] in (tree["a"]["id"], tree["a1"]["id"])
    ]
    monkeypatch.setattr(queries, "SCAN", 2)
    pages = []
    cursor = None
    while True:
        params = {"after": cursor} if cursor else {}
        body = (
            await h.client.get(f"/orgs/{tree['a']['id']}/events", params=params, headers=h.auth())
        ).json()
        pages.append(body["data"])
        if body["next_cursor"] == cursor:
            break
        cursor = body["next_cursor"]
    assert any(page == [] for page in pages[:-1])  # the siblings' stretch: nothing, but on
    assert all(len(page) <= 2 for page in pages)
    assert [e for page in pages for e in page] == expected
    assert expected[-1]["data"]["after"]["name"] == "A1 late"


async def test_types_filter_with_wildcards(h: Harness) -> None:
    await _tree(h)
    everything = await _all(h, h.root.org_id)
    kinds = {e["type"] for e in everything}
    assert {"org.created", "org.updated", "credits.allocated", "credits.limit_set"} <= kinds

    def of(*wanted: str) -> list[str]:
        return [e["id"] for e in everything if e["type"] in wanted]

    cases = [
        ({"type": "org.*"}, of(*(k for k in kinds if k.startswith("org.")))),
        ({"type": "*.created"}, of(*(k for k in kinds if k.endswith(".created")))),
        ({"type": "credits.allocated,org.updated"}, of("credits.allocated", "org.updated")),
        ({"type": ["credits.allocated", "org.updated"]}, of("credits.allocated", "org.updated")),
        ({"type": "c*s.*t*"}, of(*(k for k in kinds if k.startswith("credits.")))),
        ({"type": "*"}, [e["id"] for e in everything]),
        ({"type": "org_created"}, []),  # "_" is a character, not LIKE's wildcard
    ]
    for params, expected in cases:
        found = [e["id"] for e in await _all(h, h.root.org_id, **params)]
        assert found == expected, params


async def test_a_key_sees_its_subtree_only_and_no_org_out_of_its_reach(h: Harness) -> None:
    tree = await _tree(h)
    a, a1, b = tree["a"], tree["a1"], tree["b"]
    a_key = await h.create_key(a["id"], ["audit:read"])
    seen = await _all(h, a["id"], key=a_key)
    assert {e["data"]["org_id"] for e in seen} == {a["id"], a1["id"]}
    everything = await _all(h, h.root.org_id)
    assert [e["id"] for e in seen] == [
        e["id"] for e in everything if e["data"]["org_id"] in (a["id"], a1["id"])
    ]
    # The allocation to A names the root as its parent: out of A's reach, shown as null.
    allocated = [e for e in seen if e["type"] == "credits.allocated"]
    assert allocated and all(e["data"]["after"]["parent"] is None for e in allocated)
    root_view = next(e for e in everything if e["id"] == allocated[0]["id"])
    assert root_view["data"]["after"]["parent"] == h.root.org_id

    # The parent, a sibling, and an id that names nothing answer the same 404.
    for org in (h.root.org_id, b["id"], "org_nothinghere000"):
        response = await h.client.get(f"/orgs/{org}/events", headers=h.auth(a_key))
        problem(response, 404)
        assert response.json()["detail"] == f"organization {org!r} not found"
    # A key without audit:read is refused inside its reach.
    problem(
        await h.client.get(
            f"/orgs/{a['id']}/events", headers=h.auth(await h.create_key(a["id"], ["orgs:read"]))
        ),
        403,
    )
    problem(await h.client.get(f"/orgs/{a['id']}/events"), 401)

    # A1 moves from A to B: a key of A1 reads its own move with both parents null.
    response = await h.client.post(
        f"/orgs/{a1['id']}/move", json={"parent_id": b["id"]}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    a1_key = await h.create_key(a1["id"], ["audit:read"])
    moved = [e for e in await _all(h, a1["id"], key=a1_key) if e["type"] == "org.moved"]
    assert [(m["data"]["before"], m["data"]["after"]) for m in moved] == [
        ({"parent_id": None}, {"parent_id": None})
    ]
    # The org's old subtree no longer holds its events, its new one does (by where it is now).
    assert a1["id"] not in {e["data"]["org_id"] for e in await _all(h, a["id"], key=a_key)}
    assert a1["id"] in {e["data"]["org_id"] for e in await _all(h, b["id"])}


async def test_after_now_starts_at_the_end_of_the_log(h: Harness) -> None:
    await _tree(h)
    response = await h.client.get(
        f"/orgs/{h.root.org_id}/events", params={"after": "now"}, headers=h.auth()
    )
    body = response.json()
    assert body["data"] == []
    await h.create_org(h.root.org_id, "Next")
    page = (
        await h.client.get(
            f"/orgs/{h.root.org_id}/events", params={"after": body["next_cursor"]}, headers=h.auth()
        )
    ).json()
    assert [e["type"] for e in page["data"]] == ["org.created"]


async def test_bad_input_is_400_naming_the_parameter(h: Harness) -> None:
    url = f"/orgs/{h.root.org_id}/events"
    cases = [
        ({"after": "not-a-cursor"}, "query.after"),
        ({"after": "WyJ4Il0"}, "query.after"),  # ["x"]
        ({"after": "Wy0xXQ"}, "query.after"),  # [-1]
        ({"type": "Org.Created"}, "query.type"),
        ({"type": "org.created,bad type"}, "query.type"),
        ({"type": "x" * 65}, "query.type"),
        ({"type": ",".join(f"t{i}" for i in range(21))}, "query.type"),
        ({"limit": "0"}, "query.limit"),
        ({"limit": "1001"}, "query.limit"),
        ({"limit": "ten"}, "query.limit"),
    ]
    for params, field in cases:
        problem(await h.client.get(url, params=params, headers=h.auth()), 400, field)
        if "limit" not in params:
            problem(
                await h.client.get(url + "/stream", params=params, headers=h.auth()), 400, field
            )
    problem(
        await h.client.get(url + "/stream", headers={**h.auth(), "Last-Event-ID": "nope"}),
        400,
        "header.Last-Event-ID",
    )


async def _collect(messages: Any, count: int) -> list[Any]:
    """The next ``count`` messages of one stream's ``aiter_sse()``."""
    return [await anext(messages) for _ in range(count)]


async def test_the_stream_sends_what_is_there_then_what_commits_and_resumes(
    h: Harness, live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_api, "POLL_SECONDS", 0.05)
    tree = await _tree(h)
    a = tree["a"]
    a_key = await h.create_key(a["id"], ["audit:read"])
    existing = await _all(h, a["id"], key=a_key)
    assert len(existing) >= 2
    url = f"{live.url}/orgs/{a['id']}/events/stream"
    headers = {"Authorization": f"Bearer {a_key}"}
    async with httpx.AsyncClient(timeout=10) as client:
        async with aconnect_sse(client, "GET", url, headers=headers) as source:
            assert source.response.status_code == 200
            assert source.response.headers["content-type"].startswith("text/event-stream")
            messages = source.aiter_sse()
            first = await asyncio.wait_for(_collect(messages, len(existing)), 10)
            assert [m.json()["id"] for m in first] == [e["id"] for e in existing]
            assert [m.event for m in first] == [e["type"] for e in existing]
            # Committed after the client connected; the sibling's change is not A's.
            await h.client.patch(f"/orgs/{tree['b']['id']}", json={"name": "Bx"}, headers=h.auth())
            await h.client.patch(
                f"/orgs/{tree['a1']['id']}", json={"name": "A1x"}, headers=h.auth()
            )
            (new,) = await asyncio.wait_for(_collect(messages, 1), 10)
            assert new.event == "org.updated"
            assert new.json()["data"]["org_id"] == tree["a1"]["id"]
            assert new.json()["data"]["after"]["name"] == "A1x"
            resume_from = new.id
        # Reconnect with the last id: only what came after it.
        await h.client.patch(f"/orgs/{a['id']}", json={"name": "Ax"}, headers=h.auth())
        await h.client.patch(f"/orgs/{a['id']}", json={"name": "Ay"}, headers=h.auth())
        resumed = {**headers, "Last-Event-ID": resume_from}
        async with aconnect_sse(client, "GET", url, headers=resumed) as source:
            messages = source.aiter_sse()
            later = await asyncio.wait_for(_collect(messages, 2), 10)
            assert [m.json()["data"]["after"]["name"] for m in later] == ["Ax", "Ay"]
            assert all(m.json()["data"]["sequence"] > new.json()["data"]["sequence"] for m in later)
        # Out of reach, and the same on a stream: 404 before any stream starts.
        response = await client.get(
            f"{live.url}/orgs/{h.root.org_id}/events/stream", headers=headers
        )
        assert response.status_code == 404


async def test_a_quiet_stream_sends_keep_alives_and_ends_at_its_lifetime(
    h: Harness, live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_api, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(events_api, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(events_api, "STREAM_SECONDS", 1.0)
    url = f"{live.url}/orgs/{h.root.org_id}/events/stream"
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", url, params={"after": "now"}, headers=h.auth()) as response,
    ):
        assert response.status_code == 200
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
    text = body.decode()
    assert text.count(": keep-alive\n\n") >= 2, text
    assert "data:" not in text
