"""The test harness's types and start/stop functions: a running app on one database, its
services and the bootstrapped root; the app on a real socket for the vendors' clients.

The fixtures that give them to tests (``db_url``, ``h``, ``live``...) are in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa

from orgplane.api.deps import Services
from orgplane.app import bind, build_services, create_app
from orgplane.config import Settings
from orgplane.core.bootstrap import Bootstrapped, bootstrap
from orgplane.models import audit_log, ledger

T = TypeVar("T")


def run_in_thread(fn: Any) -> Any:
    """Session set-up runs while the test loop may be running; give it a loop of its own."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def make_settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "environment": "test",
        "rate_limit_per_key": "100000/minute",
        "rate_limit_per_org": "100000/minute",
        "rate_limit_sign_in_per_ip": "100000/minute",
        "rate_limit_auth_failures_per_ip": "100000/minute",
        "log_level": "warning",
        **overrides,
    }
    return Settings(**values)


@dataclass
class Harness:
    """A running app on one database, its services, and the bootstrapped root."""

    app: Any
    services: Services
    client: httpx.AsyncClient
    root: Bootstrapped

    async def written(self) -> tuple[int, int]:
        """How many audit entries and ledger rows exist (a refused write adds none)."""
        async with self.services.db.read() as conn:
            audits = await conn.execute(sa.select(sa.func.count()).select_from(audit_log))
            rows = await conn.execute(sa.select(sa.func.count()).select_from(ledger))
            return int(audits.scalar_one()), int(rows.scalar_one())

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.root.api_key}"}

    async def create_org(
        self, parent: str, name: str, key: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        response = await self.client.post(
            f"/orgs/{parent}/children", json={"name": name, **fields}, headers=self.auth(key)
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def create_key(
        self, org: str, scopes: list[str], key: str | None = None, **fields: Any
    ) -> str:
        response = await self.client.post(
            f"/orgs/{org}/api_keys",
            json={"name": "test", "scopes": scopes, **fields},
            headers=self.auth(key),
        )
        assert response.status_code == 201, response.text
        secret: str = response.json()["api_key"]
        return secret


# Litestar applications by settings, reused across tests: building one models every handler's
# signature (~0.3 s), several minutes over the suite. A test holding one (two harnesses with the
# same settings at once) gets a fresh one for the second.
_apps: dict[str, Any] = {}
_apps_in_use: set[int] = set()


def _harness_app(services: Services) -> Any:
    key = services.settings.model_dump_json()
    litestar = _apps.get(key)
    if litestar is None or id(litestar) in _apps_in_use:
        litestar = create_app(services.settings, services).litestar
        _apps.setdefault(key, litestar)
    _apps_in_use.add(id(litestar))
    return bind(litestar, services)


async def start_harness(db_url: str, **overrides: Any) -> Harness:
    services = build_services(make_settings(db_url, **overrides))
    app = _harness_app(services)
    services.access_log.start()
    root = await bootstrap(services.db, name="Root")
    assert root is not None
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://orgplane.test"
    )
    return Harness(app=app, services=services, client=client, root=root)


async def stop_harness(harness: Harness) -> None:
    _apps_in_use.discard(id(harness.app.litestar))
    await harness.client.aclose()
    await harness.services.access_log.stop()
    await harness.services.db.dispose()


@dataclass
class LiveServer:
    """The harness's app on a real socket, for the vendors' own (blocking) client libraries.

    The server runs on the test's event loop; ``call`` runs a client call in a thread so the
    loop keeps serving while the client waits.
    """

    url: str

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)
