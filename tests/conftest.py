"""Test harness: every test that takes ``db_url`` runs on SQLite and on PostgreSQL.

Each database is migrated once per session with the real Alembic migrations; between tests the
tables are emptied (PostgreSQL) or the migrated file is copied afresh (SQLite), so every test
starts from the same state. Without a reachable PostgreSQL those runs are skipped with a loud
message, unless ORGPLANE_REQUIRE_POSTGRES=1 (CI), which makes them fail instead. The browser
tests (tests/console/test_browser.py) are skipped or failed the same way without Chromium and
Playwright (ORGPLANE_REQUIRE_BROWSER=1), and the NATS sink's tests without NATS
(ORGPLANE_REQUIRE_NATS=1; support/nats.py).

The harness's types and functions (``Harness``, ``start_harness``...) are in support/harness.py;
the helpers tests share are in support/.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from orgplane.api.dialects.sumologic import limits as sumologic_limits
from orgplane.db.migrate import upgrade
from orgplane.models import metadata, meters
from support.browser import CHROMIUM, REQUIRE_BROWSER, browser_missing
from support.harness import Harness, LiveServer, run_in_thread, start_harness, stop_harness
from support.nats import NATS_URL, REQUIRE_NATS, Stream, drop, nats_unreachable, own_stream

POSTGRES_URL = os.environ.get(
    "ORGPLANE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("ORGPLANE_REQUIRE_POSTGRES") == "1"
_postgres_state: dict[str, Any] = {}


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
            run_in_thread(lambda: asyncio.run(asyncio.wait_for(probe(), timeout=5)))
            _postgres_state["error"] = None
        except Exception as exc:
            _postgres_state["error"] = f"{type(exc).__name__}: {exc}"
    error: str | None = _postgres_state["error"]
    return error


def pytest_report_header(config: pytest.Config) -> list[str]:
    banner = "!" * 78
    lines = []
    error = _postgres_reachable()
    if error is None:
        lines.append(
            f"orgplane: PostgreSQL at {POSTGRES_URL} is reachable; tests run on both databases"
        )
    else:
        lines += [
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
    missing = browser_missing()
    if missing is None:
        lines.append(f"orgplane: browser tests run in Chromium at {CHROMIUM}")
    else:
        lines += [
            banner,
            f"orgplane: browser tests cannot run: they need {missing}.",
            "orgplane: browser tests will be "
            + (
                "FAILED (ORGPLANE_REQUIRE_BROWSER=1)."
                if REQUIRE_BROWSER
                else "SKIPPED. The console is tested over HTTP only."
            ),
            banner,
        ]
    nats_error = nats_unreachable()
    if nats_error is None:
        lines.append(f"orgplane: NATS at {NATS_URL} is reachable; the NATS sink is tested")
    else:
        lines += [
            banner,
            f"orgplane: NATS at {NATS_URL} is NOT reachable ({nats_error}).",
            "orgplane: NATS sink tests will be "
            + ("FAILED (ORGPLANE_REQUIRE_NATS=1)." if REQUIRE_NATS else "SKIPPED."),
            banner,
        ]
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _postgres_reachable() is not None and not REQUIRE_POSTGRES:
        terminalreporter.write_sep(
            "!",
            "PostgreSQL was unreachable: its tests were SKIPPED, only SQLite was tested",
            red=True,
        )
    missing = browser_missing()
    if missing is not None and not REQUIRE_BROWSER:
        terminalreporter.write_sep(
            "!", f"browser tests were SKIPPED: they need {missing}", red=True
        )
    if nats_unreachable() is not None and not REQUIRE_NATS:
        terminalreporter.write_sep(
            "!", f"NATS at {NATS_URL} was unreachable: the NATS sink tests were SKIPPED", red=True
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

    run_in_thread(lambda: asyncio.run(create()))
    try:
        upgrade(url)
        yield url
    finally:
        run_in_thread(lambda: asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))


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


@pytest.fixture
async def nats_stream() -> AsyncIterator[Stream]:
    """A JetStream stream name and subject prefix of the test's own, dropped after it."""
    error = nats_unreachable()
    if error is not None:
        if REQUIRE_NATS:
            pytest.fail(f"NATS is required (ORGPLANE_REQUIRE_NATS=1) but unreachable: {error}")
        pytest.skip(f"NATS at {NATS_URL} unreachable ({error})")
    stream = await own_stream()
    try:
        yield stream
    finally:
        await drop(stream)


@pytest.fixture
async def h(db_url: str) -> AsyncIterator[Harness]:
    harness = await start_harness(db_url)
    try:
        yield harness
    finally:
        await stop_harness(harness)


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


@pytest.fixture
def relaxed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lift Sumo Logic's 4 requests per second for tests that make many calls in a row (the
    limit itself is tested on its own in tests/api/dialects/sumologic/test_users.py)."""
    monkeypatch.setattr(sumologic_limits, "RATE", "10000/second")
