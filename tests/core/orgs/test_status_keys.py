"""A key stops working the moment its org stops being active, whichever surface stopped it.

A disabled org's keys keep working (only deactivated and deleted orgs' keys are refused).
The key cache keeps lookups for ``key_cache_seconds``; the commands that change an org's status
(or delete it) drop the cached keys after their commit (``Tx.forget_keys``), so no surface has
to remember to. Each case: a key of a child, used once so that it is cached, then the child
disabled, deactivated or deleted through one surface by the root's key, then the child's key
refused at once although the cache would have kept it five minutes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from orgplane.core.ids import sumo_org_id
from support.harness import Harness, start_harness, stop_harness
from support.keys import dialect_key
from support.make import org_key


@pytest.fixture
async def cached(db_url: str) -> AsyncIterator[Harness]:
    harness = await start_harness(db_url, key_cache_seconds=300)
    try:
        yield harness
    finally:
        await stop_harness(harness)


async def _native_deactivate(h: Harness, child: str) -> httpx.Response:
    return await h.client.patch(f"/orgs/{child}", json={"status": "deactivated"}, headers=h.auth())


async def _native_delete(h: Harness, child: str) -> httpx.Response:
    return await h.client.delete(f"/orgs/{child}", headers=h.auth())


async def _make_delete(h: Harness, child: str) -> httpx.Response:
    token = (await dialect_key(h, h.root.org_id, "make"))["token"]
    return await h.client.delete(
        f"/make/api/v2/organizations/{await org_key(h, child)}",
        params={"confirmed": "true"},
        headers={"Authorization": f"Token {token}"},
    )


async def _sumologic_deactivate(h: Harness, child: str) -> httpx.Response:
    key = await dialect_key(h, h.root.org_id, "sumologic")
    return await h.client.delete(
        f"/sumologic/api/v1/organizations/{sumo_org_id('us1', await org_key(h, child))}",
        auth=httpx.BasicAuth(key["access_id"], key["access_key"]),
        headers={"parentDeploymentId": "us1"},
    )


async def _datadog_downgrade(h: Harness, child: str) -> httpx.Response:
    key = await dialect_key(h, h.root.org_id, "datadog")
    return await h.client.post(
        f"/datadog/api/v1/org/{child}/downgrade",
        headers={"DD-API-KEY": key["api_key"], "DD-APPLICATION-KEY": key["application_key"]},
    )


STOPS: dict[str, Callable[[Harness, str], Awaitable[httpx.Response]]] = {
    "native deactivate": _native_deactivate,
    "native delete": _native_delete,
    "make delete": _make_delete,
    "sumologic deactivate": _sumologic_deactivate,
    "datadog downgrade": _datadog_downgrade,
}


@pytest.mark.parametrize("surface", list(STOPS))
async def test_a_stopped_orgs_key_is_refused_at_once(cached: Harness, surface: str) -> None:
    h = cached
    child = (await h.create_org(h.root.org_id, f"Child via {surface}"))["id"]
    key = await h.create_key(child, ["orgs:read"])
    seen = await h.client.get(f"/orgs/{child}", headers=h.auth(key))
    assert seen.status_code == 200, seen.text
    stopped = await STOPS[surface](h, child)
    assert stopped.status_code == 200, stopped.text
    refused = await h.client.get(f"/orgs/{child}", headers=h.auth(key))
    assert refused.status_code == 401, refused.text


async def test_a_reactivated_orgs_key_works_at_once(cached: Harness) -> None:
    """Refusals are cached too: reactivating the org drops them."""
    h = cached
    child = (await h.create_org(h.root.org_id, "Child"))["id"]
    key = await h.create_key(child, ["orgs:read"])
    assert (await _native_deactivate(h, child)).status_code == 200
    refused = await h.client.get(f"/orgs/{child}", headers=h.auth(key))
    assert refused.status_code == 401, refused.text
    back = await h.client.patch(f"/orgs/{child}", json={"status": "active"}, headers=h.auth())
    assert back.status_code == 200, back.text
    seen = await h.client.get(f"/orgs/{child}", headers=h.auth(key))
    assert seen.status_code == 200, seen.text
