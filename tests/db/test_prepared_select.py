"""PreparedSelect runs a Core SELECT on the driver directly: it must give the same values as
SQLAlchemy would (time zones, JSON, NULLs), on both databases, and fall back inside a
transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from orgplane.core.access.service import ORG_COLUMNS, PARENT
from orgplane.core.orgs import queries as org_queries
from orgplane.db.engine import PreparedSelect, Tx, all_rows, first
from orgplane.models import orgs
from support.harness import Harness

STATEMENT = (
    sa.select(*ORG_COLUMNS)
    .select_from(orgs.outerjoin(PARENT, PARENT.c.id == orgs.c.parent_id))
    .where(orgs.c.public_id == sa.bindparam("public_id"))
)
PREPARED = PreparedSelect(STATEMENT)


async def test_rows_match_sqlalchemys_on_both_databases(h: Harness) -> None:
    child = await h.create_org(
        h.root.org_id, "Prepared", tags=["env:prod"], settings={"theme": "dark"}
    )
    for public_id in (child["id"], h.root.org_id):
        async with h.services.db.read() as conn:
            fast = await first(conn, PREPARED, {"public_id": public_id})
            slow = (await conn.execute(STATEMENT, {"public_id": public_id})).first()
        assert fast is not None and slow is not None
        assert fast._fields == tuple(slow._fields)
        for name in slow._fields:
            assert getattr(fast, name) == getattr(slow, name), name
            assert type(getattr(fast, name)) is type(getattr(slow, name)), name
    assert fast.parent_public_id is None and fast.created_at.tzinfo is not None
    async with h.services.db.read() as conn:
        assert await first(conn, PREPARED, {"public_id": "org_missing"}) is None


async def test_inside_a_transaction_rows_match_too(h: Harness) -> None:
    """On PostgreSQL the driver runs it inside the transaction; SQLite's goes through
    SQLAlchemy (aiosqlite's connection lives on its own thread)."""
    child = await h.create_org(h.root.org_id, "In a transaction")

    async def read(tx: Tx) -> tuple[Any, Any]:
        params = {"public_id": child["id"]}
        return await first(tx.conn, PREPARED, params), (await tx.execute(STATEMENT, params)).first()

    fast, slow = await h.services.db.transaction(read)
    assert fast is not None and slow is not None
    assert tuple(fast) == tuple(slow) and fast.parent_public_id == h.root.org_id


async def test_lists_match_sqlalchemys_and_page_alike(h: Harness) -> None:
    """The unfiltered children page runs prepared; its rows and pages are those of the query
    SQLAlchemy runs for a filtered one."""
    for i in range(5):
        await h.create_org(h.root.org_id, f"Child {i}", tags=[f"n:{i}"])
    async with h.services.db.read() as conn:
        root_key = (
            await conn.execute(sa.select(orgs.c.id).where(orgs.c.public_id == h.root.org_id))
        ).scalar_one()
        params = {"parent_id": root_key, "limit": 10}
        fast = await all_rows(conn, org_queries.CHILDREN, params)
        slow = (await conn.execute(org_queries.CHILDREN.statement, params)).all()
        assert [tuple(r) for r in fast] == [tuple(r) for r in slow] and len(fast) == 5
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await h.client.get(
            f"/orgs/{h.root.org_id}/children", params=params, headers=h.auth()
        )
        assert page.status_code == 200, page.text
        seen += [o["name"] for o in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"Child {i}" for i in range(5)]
    filtered = await h.client.get(
        f"/orgs/{h.root.org_id}/children", params={"tag": "n:3"}, headers=h.auth()
    )
    assert [o["name"] for o in filtered.json()["data"]] == ["Child 3"]


async def test_postgres_reads_take_only_the_connections_they_use(h: Harness) -> None:
    """Prepared reads run on the read pool without a SQLAlchemy connection; a read that also
    executes a Core statement takes one, and both go back when the read ends, also when the
    read fails."""
    db = h.services.db
    if db.is_sqlite:
        pytest.skip("SQLite reads run on one synchronous connection")
    engine_pool: Any = db.engine.pool
    async with db.read() as conn:
        assert await first(conn, PREPARED, {"public_id": h.root.org_id}) is not None
        assert engine_pool.checkedout() == 0
        (await conn.execute(sa.select(orgs.c.id))).all()
        assert engine_pool.checkedout() == 1
    assert engine_pool.checkedout() == 0
    read_pool = await db.read_pool()
    idle = read_pool.get_idle_size()
    with pytest.raises(ZeroDivisionError):
        async with db.read() as conn:
            await first(conn, PREPARED, {"public_id": h.root.org_id})
            assert read_pool.get_idle_size() == idle - 1
            1 / 0  # noqa: B018
    assert read_pool.get_idle_size() == idle
    # Many reads at once: each gets its own connection, none leaks.
    results = await asyncio.gather(*(_read_root(h) for _ in range(25)))
    assert all(r is not None for r in results)
    assert read_pool.get_idle_size() == read_pool.get_size()


async def _read_root(h: Harness) -> Any:
    async with h.services.db.read() as conn:
        return await first(conn, PREPARED, {"public_id": h.root.org_id})


async def test_postgres_sessions_plan_for_short_lookups(h: Harness) -> None:
    """Both kinds of PostgreSQL connection run without JIT and with SSD page costs."""
    db = h.services.db
    if db.is_sqlite:
        pytest.skip("PostgreSQL session settings")
    async with db.read() as conn:
        engine_side = [(await conn.execute(sa.text(f"SHOW {name}"))).scalar() for name in SETTINGS]
        driver = await (await db.read_pool()).acquire()
        try:
            driver_side = [await driver.fetchval(f"SHOW {name}") for name in SETTINGS]
        finally:
            await (await db.read_pool()).release(driver)
    assert engine_side == driver_side == ["off", "1.1"]


SETTINGS = ("jit", "random_page_cost")
