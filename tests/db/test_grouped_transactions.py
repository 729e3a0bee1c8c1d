"""Group commit (``Database.transaction_grouped``): calls waiting at the same time share one
transaction, and each caller still gets what ``Database.transaction`` would have given it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from orgplane.core.errors import Conflict
from orgplane.db.engine import Database, Tx, reads_postgres
from orgplane.db.grouped import GROUP_MAX
from support.harness import Harness

_probe_metadata = sa.MetaData()
probe = sa.Table(
    "grouped_probe",
    _probe_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tx", sa.String(40), nullable=False),
)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    async with database.engine.begin() as conn:
        await conn.run_sync(_probe_metadata.create_all)
    try:
        yield database
    finally:
        async with database.engine.begin() as conn:
            await conn.run_sync(_probe_metadata.drop_all)
        await database.dispose()


async def _rows(db: Database) -> dict[int, str]:
    async with db.read() as conn:
        return {r.id: r.tx for r in (await conn.execute(sa.select(probe))).all()}


_transactions = itertools.count()


def _tag(tx: Tx) -> str:
    """A name for the transaction, the same for every call that runs in it."""
    if not hasattr(tx, "probe_tag"):
        tx.probe_tag = str(next(_transactions))  # type: ignore[attr-defined]
    return str(tx.probe_tag)  # type: ignore[attr-defined]


def _insert(row_id: int, *, fail: Exception | None = None) -> Any:
    async def work(tx: Tx) -> int:
        await tx.execute(sa.insert(probe).values(id=row_id, tx=_tag(tx)))
        tx.pending_audit.append({"probe": row_id})
        tx.after_commit.append(lambda: committed.append(row_id))
        await asyncio.sleep(0)  # let the other callers queue up
        if fail is not None:
            raise fail
        return row_id

    return work


committed: list[int] = []


async def test_waiting_calls_share_one_transaction_and_each_gets_its_result(db):
    committed.clear()
    appended: list[list[dict[str, Any]]] = []

    async def before_commit(tx: Tx) -> None:
        appended.append(list(tx.pending_audit))

    db.before_commit = before_commit
    results = await asyncio.gather(*(db.transaction_grouped("g", _insert(i)) for i in range(1, 41)))
    assert results == list(range(1, 41))
    rows = await _rows(db)
    assert sorted(rows) == list(range(1, 41))
    # All forty were waiting when the group's task started: one transaction, one commit.
    assert len(set(rows.values())) == 1
    assert len(appended) == 1
    assert sorted(committed) == list(range(1, 41))
    assert sorted(e["probe"] for batch in appended for e in batch) == list(range(1, 41))


async def test_a_group_takes_at_most_group_max_calls_a_transaction(db):
    count = GROUP_MAX * 2 + 5
    await asyncio.gather(*(db.transaction_grouped("g", _insert(i)) for i in range(count)))
    rows = await _rows(db)
    assert len(rows) == count
    sizes: dict[str, int] = {}
    for tx in rows.values():
        sizes[tx] = sizes.get(tx, 0) + 1
    assert max(sizes.values()) <= GROUP_MAX
    assert len(sizes) >= 3


async def test_a_refused_call_is_rolled_back_alone_and_raised_to_its_caller(db):
    committed.clear()
    appended: list[dict[str, Any]] = []

    async def before_commit(tx: Tx) -> None:
        appended.extend(tx.pending_audit)

    db.before_commit = before_commit
    calls = [
        db.transaction_grouped("g", _insert(i, fail=Conflict("no") if i % 3 == 0 else None))
        for i in range(1, 13)
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for i, outcome in zip(range(1, 13), outcomes, strict=True):
        if i % 3 == 0:
            assert isinstance(outcome, Conflict)
        else:
            assert outcome == i
    kept = [i for i in range(1, 13) if i % 3]
    assert sorted(await _rows(db)) == kept
    # Neither the refused calls' audit entries nor their callbacks survive.
    assert sorted(e["probe"] for e in appended) == kept
    assert sorted(committed) == kept


async def test_a_failed_commit_runs_every_call_again_on_its_own(db):
    failures = [RuntimeError("the shared commit failed")]

    async def before_commit(tx: Tx) -> None:
        if tx.grouped and failures:
            raise failures.pop()

    db.before_commit = before_commit
    results = await asyncio.gather(*(db.transaction_grouped("g", _insert(i)) for i in range(10)))
    assert results == list(range(10))
    rows = await _rows(db)
    assert sorted(rows) == list(range(10))
    assert not failures


async def test_a_retryable_error_runs_that_call_again_alone(db, monkeypatch):
    class Deadlock(Exception):
        sqlstate = "40P01"

    attempts: list[int] = []

    def flaky(row_id: int) -> Any:
        inner = _insert(row_id)

        async def work(tx: Tx) -> int:
            attempts.append(row_id)
            result: int = await inner(tx)
            if row_id == 3 and tx.grouped:
                raise Deadlock("deadlock detected")
            return result

        return work

    results = await asyncio.gather(*(db.transaction_grouped("g", flaky(i)) for i in range(6)))
    assert results == list(range(6))
    assert sorted(await _rows(db)) == list(range(6))
    assert attempts.count(3) == 2


async def test_a_caller_that_goes_away_does_not_stop_the_others(db):
    started = asyncio.Event()

    async def slow(tx: Tx) -> int:
        await tx.execute(sa.insert(probe).values(id=100, tx=_tag(tx)))
        started.set()
        await asyncio.sleep(0.05)
        return 100

    first = asyncio.create_task(db.transaction_grouped("g", slow))
    await started.wait()
    others = [asyncio.create_task(db.transaction_grouped("g", _insert(i))) for i in range(5)]
    await asyncio.sleep(0)
    others[0].cancel()
    assert await first == 100
    results = await asyncio.gather(*others, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [1, 2, 3, 4]
    # The cancelled caller's work was not started: its group had not reached it.
    assert sorted(await _rows(db)) == [1, 2, 3, 4, 100]


async def test_groups_are_independent(db):
    results = await asyncio.gather(
        *(db.transaction_grouped(("g", i % 2), _insert(i)) for i in range(1, 21))
    )
    assert results == list(range(1, 21))
    rows = await _rows(db)
    assert {rows[i] for i in range(1, 21, 2)}.isdisjoint({rows[i] for i in range(2, 21, 2)})


async def test_concurrent_allocations_from_one_parent_are_each_audited_and_chained(h: Harness):
    root = h.root.org_id
    response = await h.client.put(
        f"/orgs/{root}/limits/operations", json={"amount": 10_000_000}, headers=h.auth()
    )
    assert response.status_code == 200, response.text
    children = [(await h.create_org(root, f"C{i}"))["id"] for i in range(16)]

    async def allocate(child: str, amount: int) -> Any:
        return await h.client.put(
            f"/orgs/{root}/children/{child}/allocations/operations",
            json={"amount": amount},
            headers=h.auth(),
        )

    # Every child twice (two calls on one child in one transaction), and one refusal.
    calls = [allocate(c, 10_000 * (i + 1)) for i, c in enumerate(children)]
    calls += [allocate(c, 20_000 * (i + 1)) for i, c in enumerate(children)]
    calls.append(allocate(children[0], 90_000_000))
    responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses[:-1]] == [200] * 32
    assert responses[-1].status_code == 409
    assert responses[-1].json()["type"].endswith("/insufficient_pool")

    credits = (await h.client.get(f"/orgs/{root}/credits", headers=h.auth())).json()
    (operations,) = [m for m in credits["meters"] if m["meter"] == "operations"]
    assert operations["allocated"] == sum(20_000 * (i + 1) for i in range(16))

    audit = await h.client.get(
        f"/orgs/{root}/children_audit",
        params={"action": "credits.allocated", "limit": 100},
        headers=h.auth(),
    )
    assert audit.status_code == 200, audit.text
    assert len(audit.json()["data"]) == 32
    ledger = await h.client.get(f"/orgs/{root}/ledger", params={"limit": 100}, headers=h.auth())
    assert sum(1 for e in ledger.json()["data"] if e["kind"] == "allocation") == 32

    async with h.services.db.read() as conn:
        from orgplane.core.audit import service as audit_service

        assert await audit_service.verify(conn) == []


async def test_a_database_error_in_one_call_leaves_the_transaction_usable(db):
    """A statement that fails (here a duplicate key) aborts only its call's savepoint."""
    await db.transaction(_insert(7))
    calls = [db.transaction_grouped("g", _insert(i)) for i in (5, 6, 7, 8, 7, 9)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert outcomes[:4] == [5, 6, outcomes[2], 8] and outcomes[5] == 9
    assert isinstance(outcomes[2], sa.exc.IntegrityError)
    assert isinstance(outcomes[4], sa.exc.IntegrityError)
    assert sorted(await _rows(db)) == [5, 6, 7, 8, 9]


async def test_a_call_alone_runs_as_a_plain_transaction(db):
    """No savepoint and no sharing for a call nobody waits beside: its work may count on the
    transaction being its own (an allocation chains its audit entry in place then)."""
    seen: list[bool] = []

    async def work(tx: Tx) -> int:
        seen.append(tx.grouped)
        await tx.execute(sa.insert(probe).values(id=1, tx=_tag(tx)))
        return 1

    assert await db.transaction_grouped("g", work) == 1
    assert seen == [False]
    assert sorted(await _rows(db)) == [1]


async def test_readers_say_which_database_they_read(db, db_url):
    expected = db_url.startswith("postgresql")
    async with db.read() as conn:
        assert reads_postgres(conn) is expected

    async def in_transaction(tx: Tx) -> bool:
        return reads_postgres(tx.conn)

    assert await db.transaction(in_transaction) is expected
