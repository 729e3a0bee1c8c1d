"""The Alembic history and the table definitions agree, and migrations run both ways."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from orgplane.db.migrate import downgrade, upgrade
from orgplane.models import metadata


def _diff(connection: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "render_as_batch": True}
    )
    return list(compare_metadata(context, metadata))


async def test_models_match_the_migrations(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert differences == []


async def test_downgrade_to_base_and_upgrade_again(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'roundtrip.db'}"
    upgrade(url)
    downgrade(url, "base")
    upgrade(url)
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            meters = (await conn.execute(sa.text("SELECT name FROM meters ORDER BY name"))).all()
    finally:
        await engine.dispose()
    assert set(names) >= {t.name for t in metadata.sorted_tables}
    assert [m.name for m in meters] == ["credits", "operations", "transfer"]


async def test_window_index_carries_the_id_on_postgresql(db_url: str) -> None:
    """The drift comparison does not see INCLUDE columns: the descendants' log relies on
    ``(org_id, at, actor, action) INCLUDE (id)`` for an index-only read on PostgreSQL."""
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            indexes = await conn.run_sync(lambda c: sa.inspect(c).get_indexes("audit_log"))
    finally:
        await engine.dispose()
    (window,) = [i for i in indexes if i["name"] == "ix_audit_log_org_id_at_actor_action"]
    assert window["column_names"] == ["org_id", "at", "actor", "action"]
    included = window.get("include_columns") or window.get("dialect_options", {}).get(
        "postgresql_include", []
    )
    assert list(included) == (["id"] if engine.dialect.name == "postgresql" else [])


async def test_path_index_carries_the_id_on_postgresql(db_url: str) -> None:
    """``uq_orgs_path`` stays unique on the path alone and, on PostgreSQL, includes the id: a
    small subtree's org ids are read from the index only (the drift test does not see INCLUDE)."""
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            uniques, indexes = await conn.run_sync(
                lambda c: (
                    sa.inspect(c).get_unique_constraints("orgs"),
                    sa.inspect(c).get_indexes("orgs"),
                )
            )
    finally:
        await engine.dispose()
    (unique,) = [u for u in uniques if u["name"] == "uq_orgs_path"]
    assert unique["column_names"] == ["path"]
    if engine.dialect.name == "postgresql":
        (index,) = [i for i in indexes if i["name"] == "uq_orgs_path"]
        assert index["unique"] and index["column_names"] == ["path"]
        assert list(index["dialect_options"]["postgresql_include"]) == ["id"]


async def test_entries_written_before_0010_still_verify_after_it(tmp_path: Any) -> None:
    """0010 adds ``audit_log.surface``; the chain covers it only when set, so an entry written
    before it (here, with the hash orgplane computed before 0010) verifies after the upgrade,
    and giving that entry a surface afterwards is caught as an alteration."""
    from datetime import UTC, datetime

    from orgplane.core.audit import service as audit
    from orgplane.models import audit_chain_heads, audit_log

    url = f"sqlite+aiosqlite:///{tmp_path / 'before-0010.db'}"
    upgrade(url, "0009")
    written = {
        "root_id": 1, "seq": 1, "org_id": 1, "at": datetime(2026, 12, 1, 12, tzinfo=UTC),
        "actor": "system", "actor_key_id": None, "actor_user_id": None,
        "action": "org.created", "target_type": "org", "target_id": "org_before0010",
        "before": None, "after": {"name": "Before"}, "request_id": None, "ip": None,
        "user_agent": "orgplane-cli", "prev_hash": audit.GENESIS,
        # sha256 of the entry as orgplane chained it before 0010 (no surface in the document).
        "hash": "336b4c31499a6fb6d9f86b2104a98ddaa3a952e14159c3e2ba3476f138ee91af",
    }  # fmt: skip
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(audit_log).values(written))
            await conn.execute(
                sa.insert(audit_chain_heads).values(root_id=1, seq=1, last_hash=written["hash"])
            )
        assert upgrade(url)[0] == "0010"
        async with engine.begin() as conn:
            assert (await conn.execute(sa.select(audit_log.c.surface))).scalar_one() is None
            assert await audit.verify(conn) == []
            await conn.execute(sa.update(audit_log).values(surface="console"))
            (broken,) = await audit.verify(conn)
            assert (broken.seq, broken.reason) == (1, "entry was altered")
    finally:
        await engine.dispose()
