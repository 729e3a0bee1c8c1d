"""Failed authentications: throttled per client address (429 with Retry-After) without ever
refusing a valid key, and counted by reason in /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from orgplane.app import build_services, create_app
from orgplane.core.ids import new_native_key, new_uuid
from support.harness import Harness, make_settings, start_harness, stop_harness
from support.make import BASE as MAKE
from support.make import token
from support.redis_db import REDIS_URL

ATTACKER = ("198.51.100.9", 40000)
OTHER = ("203.0.113.7", 40001)


@asynccontextmanager
async def throttled(db_url: str, limit: str, **overrides: Any) -> AsyncIterator[Harness]:
    harness = await start_harness(db_url, rate_limit_auth_failures_per_ip=limit, **overrides)
    try:
        yield harness
    finally:
        await stop_harness(harness)


@asynccontextmanager
async def client_at(h: Harness, address: tuple[str, int]) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests come from ``address``."""
    transport = httpx.ASGITransport(app=h.app, client=address)
    async with httpx.AsyncClient(transport=transport, base_url="http://orgplane.test") as client:
        yield client


def _samples(text: str, name: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(v for _, v in sorted(sample.labels.items()))] = sample.value
    return out


def _assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["type"].endswith("/rate_limited")
    assert "failed authentications from this address" in problem["detail"]
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["ratelimit-policy"] == '3;w=60;name="auth-failure"'


async def test_failures_past_the_limit_get_429_and_valid_keys_still_work(db_url: str) -> None:
    async with (
        throttled(db_url, "3/minute") as h,
        client_at(h, ATTACKER) as attacker,
        client_at(h, OTHER) as other,
    ):
        wrong = {"Authorization": f"Bearer {new_native_key()}"}
        for remaining in (2, 1, 0):
            refused = await attacker.get("/me", headers=wrong)
            assert refused.status_code == 401, refused.text
            assert refused.headers["ratelimit-remaining"] == str(remaining)
        # Past the limit: every failure from that address, whatever the credential or path.
        _assert_throttled(await attacker.get("/me", headers=wrong))
        _assert_throttled(await attacker.get("/me", headers={"Authorization": "Bearer nope"}))
        _assert_throttled(await attacker.get(f"/orgs/{h.root.org_id}"))
        _assert_throttled(await attacker.get(f"/orgs/{h.root.org_id}", headers=wrong))
        # In a vendor surface's own format: Make answers its plain-text 429.
        make = await attacker.get(f"{MAKE}/organizations", headers=token(new_uuid()))
        assert make.status_code == 429, make.text
        assert make.headers["content-type"].startswith("text/plain")
        assert 1 <= int(make.headers["retry-after"]) <= 60

        # A valid key is never refused by this limit: from another address...
        assert (await other.get("/me", headers=h.auth())).status_code == 200
        # ...nor from the throttled one (failures are throttled, not valid keys), through the
        # routed endpoints and the fast path alike.
        assert (await attacker.get("/me", headers=h.auth())).status_code == 200
        fast = await attacker.get(f"/orgs/{h.root.org_id}", headers=h.auth())
        assert fast.status_code == 200, fast.text
        # Another address has its own count: its first failure is a plain 401.
        first = await other.get("/me", headers=wrong)
        assert first.status_code == 401
        assert first.headers["ratelimit-remaining"] == "2"

        metrics = (await h.client.get("/metrics")).text
        failures = _samples(metrics, "orgplane_auth_failures_total")
        # 3 then 2 more natively from the attacker, 1 through Make, 1 from the other address.
        assert failures[("unknown key",)] == 7
        assert failures[("malformed key",)] == 1
        assert failures[("missing credentials",)] == 1
        assert _samples(metrics, "orgplane_rate_limited_total")[("auth-failure",)] == 5


async def test_an_empty_limit_turns_the_throttle_off(db_url: str) -> None:
    async with throttled(db_url, "") as h, client_at(h, ATTACKER) as attacker:
        wrong = {"Authorization": f"Bearer {new_native_key()}"}
        for _ in range(5):
            refused = await attacker.get("/me", headers=wrong)
            assert refused.status_code == 401
            assert "ratelimit-remaining" not in refused.headers


async def test_failures_are_counted_across_workers_in_redis(db_url: str, redis_db: Any) -> None:
    overrides = {"redis_url": REDIS_URL}
    async with throttled(db_url, "3/minute", **overrides) as h, client_at(h, ATTACKER) as a:
        services = build_services(
            make_settings(db_url, rate_limit_auth_failures_per_ip="3/minute", **overrides)
        )
        services.access_log.start()
        transport = httpx.ASGITransport(
            app=create_app(services.settings, services), client=ATTACKER
        )
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://orgplane.test") as b:
                wrong = {"Authorization": f"Bearer {new_native_key()}"}
                for client, remaining in ((a, 2), (b, 1), (a, 0)):
                    refused = await client.get("/me", headers=wrong)
                    assert refused.status_code == 401
                    assert refused.headers["ratelimit-remaining"] == str(remaining)
                _assert_throttled(await b.get("/me", headers=wrong))
                _assert_throttled(await a.get("/me", headers=wrong))
                assert redis_db.dbsize() > 0
                # The valid key still works on either worker.
                assert (await b.get("/me", headers=h.auth())).status_code == 200
                assert (await a.get("/me", headers=h.auth())).status_code == 200
        finally:
            await services.access_log.stop()
            await services.limiter.close()
            await services.db.dispose()
