"""Test harness: every test that takes ``db_url`` runs on SQLite and on PostgreSQL.

Each database is migrated once per session with the real Alembic migrations; between tests the
tables are emptied (PostgreSQL) or the migrated file is copied afresh (SQLite), so every test
starts from the same state. Without a reachable PostgreSQL those runs are skipped with a loud
message, unless ORGPLANE_REQUIRE_POSTGRES=1 (CI), which makes them fail instead.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from orgplane.api.deps import Services
from orgplane.app import bind, build_services, create_app
from orgplane.config import Settings
from orgplane.core.bootstrap import Bootstrapped, bootstrap
from orgplane.db.migrate import upgrade
from orgplane.models import metadata, meters

POSTGRES_URL = os.environ.get(
    "ORGPLANE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("ORGPLANE_REQUIRE_POSTGRES") == "1"
_postgres_state: dict[str, Any] = {}
T = TypeVar("T")


def _postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    if "error" not in _postgres_state:

        async def probe() -> None:
            engine = create_async_engine(POSTGRES_URL)
            try:
                async with engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
            finally:
                await engine.dispose()

        try:
            _run_in_thread(lambda: asyncio.run(asyncio.wait_for(probe(), timeout=5)))
            _postgres_state["error"] = None
        except Exception as exc:
            _postgres_state["error"] = f"{type(exc).__name__}: {exc}"
    error: str | None = _postgres_state["error"]
    return error


def _run_in_thread(fn: Any) -> Any:
    """Session set-up runs while the test loop may be running; give it a loop of its own."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def pytest_report_header(config: pytest.Config) -> list[str]:
    error = _postgres_reachable()
    if error is None:
        return [f"orgplane: PostgreSQL at {POSTGRES_URL} is reachable; tests run on both databases"]
    banner = "!" * 78
    return [
        banner,
        f"orgplane: PostgreSQL at {POSTGRES_URL} is NOT reachable ({error}).",
        "orgplane: PostgreSQL tests will be "
        + (
            "FAILED (ORGPLANE_REQUIRE_POSTGRES=1)."
            if REQUIRE_POSTGRES
            else "SKIPPED. Only SQLite is tested."
        ),
        banner,
    ]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _postgres_reachable() is not None and not REQUIRE_POSTGRES:
        terminalreporter.write_sep(
            "!",
            "PostgreSQL was unreachable: its tests were SKIPPED, only SQLite was tested",
            red=True,
        )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_migrated() -> Iterator[str]:
    """A database of this test session's own on the PostgreSQL server, migrated, dropped after.

    Its own database lets several test runs share one server without touching each other.
    """
    error = _postgres_reachable()
    if error is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(
                f"PostgreSQL is required (ORGPLANE_REQUIRE_POSTGRES=1) but unreachable: {error}"
            )
        pytest.skip(f"PostgreSQL unreachable ({error})")
    name = f"orgplane_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    async def admin(statement: str) -> None:
        engine = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text(statement))
        finally:
            await engine.dispose()

    async def create() -> None:
        # CREATE DATABASE copies template1 and fails while another session is copying it.
        for attempt in range(20):
            try:
                await admin(f'CREATE DATABASE "{name}"')
                return
            except sa.exc.DBAPIError as exc:
                if "being accessed by other users" not in str(exc) or attempt == 19:
                    raise
                await asyncio.sleep(0.25 * (attempt + 1))

    _run_in_thread(lambda: asyncio.run(create()))
    try:
        upgrade(url)
        yield url
    finally:
        _run_in_thread(lambda: asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))


# Tables the migrations fill with data every test needs.
_SEEDED = {"meters", "alembic_version"}


# The meters the first migration seeds, as it seeds them.
_BUILT_IN_METERS = {
    "operations": {"unit": "operations", "step": 10_000},
    "credits": {"unit": "credits", "step": 1},
    "transfer": {"unit": "bytes", "step": 1},
}


async def _truncate_postgres(url: str) -> None:
    """Empty every table and put the seeded meters back as the migration left them."""
    names = ", ".join(t.name for t in metadata.sorted_tables if t.name not in _SEEDED)
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        await conn.execute(sa.delete(meters).where(meters.c.name.not_in(list(_BUILT_IN_METERS))))
        for name, values in _BUILT_IN_METERS.items():
            await conn.execute(
                sa.update(meters)
                .where(meters.c.name == name)
                .values(**values, period="month", enforcement="soft", deployment_charge_pct=None)
            )
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "orgplane.db"
        shutil.copyfile(template, target)
        return f"sqlite+aiosqlite:///{target}"
    url: str = request.getfixturevalue("postgres_migrated")
    await _truncate_postgres(url)
    return url


def make_settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "environment": "test",
        "rate_limit_per_key": "100000/minute",
        "rate_limit_per_org": "100000/minute",
        "rate_limit_sign_in_per_ip": "100000/minute",
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


@pytest.fixture
async def h(db_url: str) -> AsyncIterator[Harness]:
    harness = await start_harness(db_url)
    try:
        yield harness
    finally:
        await stop_harness(harness)


@dataclass
class LiveServer:
    """The harness's app on a real socket, for the vendors' own (blocking) client libraries.

    The server runs on the test's event loop; ``call`` runs a client call in a thread so the
    loop keeps serving while the client waits.
    """

    url: str

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)


@pytest.fixture
async def live(h: Harness) -> AsyncIterator[LiveServer]:
    config = uvicorn.Config(
        h.app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the reason the server did not start
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await task


_example_numbers = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """For property tests that build a database per example inside their own event loop: a
    coroutine function returning an empty, migrated database's URL (both databases)."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")

        async def sqlite_copy() -> str:
            target = tmp_path / f"example-{next(_example_numbers)}.db"
            shutil.copyfile(template, target)
            return f"sqlite+aiosqlite:///{target}"

        return sqlite_copy
    url: str = request.getfixturevalue("postgres_migrated")

    async def postgres_truncated() -> str:
        await _truncate_postgres(url)
        return url

    return postgres_truncated
