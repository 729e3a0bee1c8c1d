"""The allocation's PostgreSQL statements (``credits/allocation_pg.py``) and what they stand on.

On PostgreSQL an allocation locks its limit rows and the audit chain head in one statement and
makes every write in another, on the driver inside the transaction; SQLite keeps the statement
per step. Both must give the same answers, ledger rows and audit entries: the rule tests of
``test_credits`` run on both, and these check what the shortcut itself could get wrong — a
driver statement outside the transaction, the chain head taken in the wrong order or chained
out of turn, a child's first row inserted twice, a deadlock, a driver error not retried.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from orgplane.core.access.principal import Caller, RequestMeta
from orgplane.core.access.service import authenticate
from orgplane.core.audit import service as audit
from orgplane.core.credits import allocation as credits
from orgplane.core.credits.ledger import verify
from orgplane.db.engine import PreparedSelect, Tx
from orgplane.models import audit_log, ledger, meters, org_limits, orgs
from orgplane.models.base import utcnow
from support.harness import Harness
from support.ledger_invariants import deadlocks

OPS = "operations"


async def _rows(h: Harness, statement: Any) -> list[Any]:
    async with h.services.db.read() as conn:
        return list((await conn.execute(statement)).all())


async def _put(h: Harness, parent: str, child: str, amount: int, meter: str = OPS) -> Any:
    return await h.client.put(
        f"/orgs/{parent}/children/{child}/allocations/{meter}",
        json={"amount": amount},
        headers=h.auth(),
    )


async def _limit(h: Harness, org: str, meter: str, amount: int) -> None:
    response = await h.client.put(
        f"/orgs/{org}/limits/{meter}", json={"amount": amount}, headers=h.auth()
    )
    assert response.status_code == 200, response.text


async def _chain_verifies(h: Harness) -> None:
    async with h.services.db.read() as conn:
        assert await audit.verify(conn) == []
        assert await verify(conn) == []


_INSERT_METER = PreparedSelect(
    sa.text(
        "INSERT INTO meters (name, unit, step, period, enforcement, description, created_at) "
        "VALUES (:name, 'units', 1, 'month', 'soft', '', :created_at) RETURNING name"
    ).columns(sa.column("name", sa.String))
)


async def test_a_driver_statement_runs_inside_the_transaction(h: Harness) -> None:
    """``Tx.fetch`` as the transaction's first statement: rolled back with it, committed with
    it (on PostgreSQL SQLAlchemy's BEGIN is lazy; the driver must not run ahead of it)."""

    class Undo(Exception):
        pass

    async def insert_then_fail(tx: Tx) -> None:
        assert await tx.fetch(_INSERT_METER, {"name": "rolled_back", "created_at": utcnow()})
        raise Undo

    with pytest.raises(Undo):
        await h.services.db.transaction(insert_then_fail)

    async def insert(tx: Tx) -> list[Any]:
        return await tx.fetch(_INSERT_METER, {"name": "kept", "created_at": utcnow()})

    (row,) = await h.services.db.transaction(insert)
    assert row.name == "kept"
    names = {r.name for r in await _rows(h, sa.select(meters.c.name))}
    assert "kept" in names and "rolled_back" not in names


async def test_a_retryable_driver_error_is_retried(h: Harness) -> None:
    """A deadlock or serialization failure raised by the driver itself (statements run on it
    directly are not wrapped by SQLAlchemy) runs the transaction again, like SQLAlchemy's."""

    class DriverDeadlock(Exception):
        sqlstate = "40P01"

    class DriverOther(Exception):
        sqlstate = "23505"

    attempts = 0

    async def flaky(tx: Tx) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise DriverDeadlock
        return attempts

    assert await h.services.db.transaction(flaky) == 2

    async def unique_violation(tx: Tx) -> None:
        raise DriverOther

    with pytest.raises(DriverOther):
        await h.services.db.transaction(unique_violation)


async def test_prepared_rows_carry_numeric_columns_as_sqlalchemy_does(h: Harness) -> None:
    """The meter row read on the driver (its NUMERIC deployment charge) equals SQLAlchemy's."""
    statement = sa.select(meters).where(meters.c.name == sa.bindparam("name"))
    prepared = PreparedSelect(statement)

    async def both(tx: Tx) -> tuple[Any, Any]:
        await tx.execute(
            sa.update(meters).where(meters.c.name == "credits").values(deployment_charge_pct=12.5)
        )
        fast = (await tx.fetch(prepared, {"name": "credits"}))[0]
        slow = (await tx.execute(statement, {"name": "credits"})).one()
        return fast, slow

    fast, slow = await h.services.db.transaction(both)
    assert tuple(fast) == tuple(slow)
    assert fast.deployment_charge_pct == Decimal("12.5")
    assert type(fast.deployment_charge_pct) is type(slow.deployment_charge_pct)


async def test_an_allocation_after_other_entries_of_its_transaction_chains_after_them(
    h: Harness,
) -> None:
    """An allocation in a transaction that already queued audit entries keeps their order."""
    root = h.root.org_id
    await _limit(h, root, OPS, 100_000)
    child = (await h.create_org(root, "Child"))["id"]
    (root_row,) = await _rows(h, sa.select(orgs).where(orgs.c.public_id == root))
    result = await authenticate(h.services.db.read, h.services.keys, h.root.api_key)
    assert result.principal is not None
    actor = Caller(meta=RequestMeta(request_id="req-both"), principal=result.principal)

    async def note_then_allocate(tx: Tx) -> credits.Allocation:
        audit.record(
            tx,
            actor,
            action="org.noted",
            root_id=root_row.root_id,
            org_id=root_row.id,
            target_type="org",
            target_id=root,
        )
        return await credits.allocate(
            tx, actor=actor, parent_ref=root, child_ref=child, meter=OPS, amount=30_000
        )

    allocation = await h.services.db.transaction(note_then_allocate)
    assert allocation.changed and allocation.child_balance.amount == 30_000
    entries = await _rows(h, sa.select(audit_log).order_by(audit_log.c.seq.desc()).limit(2))
    assert [e.action for e in reversed(entries)] == ["org.noted", "credits.allocated"]
    await _chain_verifies(h)


async def test_an_allocation_reads_back_as_the_same_entries_on_both_databases(
    h: Harness,
) -> None:
    """The ledger row and the audit entry an allocation writes hold exactly what it answered."""
    root = h.root.org_id
    await _limit(h, root, OPS, 100_000)
    child = (await h.create_org(root, "Child"))["id"]
    response = await h.client.put(
        f"/orgs/{root}/children/{child}/allocations/{OPS}",
        json={"amount": 40_000},
        headers={
            **h.auth(),
            "X-Request-Id": "req-fast",
            "User-Agent": 'ua/1 "quoted" \\ é'.encode("latin-1"),  # type: ignore[dict-item]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["diff"], body["new_parent_available"], body["new_child_limit"]) == (
        40_000,
        60_000,
        40_000,
    )
    (row,) = await _rows(h, sa.select(ledger).where(ledger.c.kind == "allocation"))
    assert (row.delta, row.org_amount, row.parent_amount, row.parent_allocated) == (
        40_000,
        40_000,
        100_000,
        40_000,
    )
    assert (row.request_id, row.actor) == ("req-fast", f"key:{h.root.key_id}")
    (entry,) = await _rows(h, sa.select(audit_log).where(audit_log.c.action == "credits.allocated"))
    assert (entry.before, entry.after) == (
        {"limit": 0, "charge": 0},
        {"limit": 40_000, "charge": 0, "parent": root},
    )
    assert (entry.request_id, entry.user_agent) == ("req-fast", 'ua/1 "quoted" \\ é')
    assert entry.at.tzinfo is not None and abs((entry.at - row.at).total_seconds()) < 5
    await _chain_verifies(h)


async def test_concurrent_allocations_under_two_parents_and_other_writes_never_deadlock(
    h: Harness,
) -> None:
    """Allocators on a parent and on its children (each child a parent too), first allocations
    to children with no limit row yet, and other audited writes of the tenant, all at once: no
    5xx, no deadlock, the pools add up and the audit chain verifies."""
    root = h.root.org_id
    await _limit(h, root, OPS, 10_000_000)
    parents = [(await h.create_org(root, f"P{i}"))["id"] for i in range(2)]
    kids = {p: [(await h.create_org(p, f"{p} kid {i}"))["id"] for i in range(6)] for p in parents}
    before = await deadlocks(h.services.db)
    rng = random.Random(7)
    statuses: list[int] = []

    async def root_to_parent() -> None:
        for _ in range(6):
            r = await _put(h, root, rng.choice(parents), rng.randint(30, 60) * 10_000)
            statuses.append(r.status_code)

    async def parent_to_kid() -> None:
        for _ in range(6):
            parent = rng.choice(parents)
            r = await _put(h, parent, rng.choice(kids[parent]), rng.randint(0, 5) * 10_000)
            statuses.append(r.status_code)

    async def other_writes() -> None:
        for i in range(4):
            r = await h.client.patch(
                f"/orgs/{rng.choice(parents)}", json={"name": f"renamed {i}"}, headers=h.auth()
            )
            statuses.append(r.status_code)

    await asyncio.gather(
        *(root_to_parent() for _ in range(4)),
        *(parent_to_kid() for _ in range(12)),
        *(other_writes() for _ in range(2)),
    )
    assert statuses and all(s in (200, 409) for s in statuses), sorted(set(statuses))
    assert statuses.count(200) > len(statuses) // 2
    if before is not None:
        assert await deadlocks(h.services.db) == before
    await _chain_verifies(h)
    for parent in [root, *parents]:
        (p,) = await _rows(h, sa.select(orgs.c.id).where(orgs.c.public_id == parent))
        children = await _rows(
            h,
            sa.select(org_limits.c.amount, org_limits.c.charge)
            .join(orgs, orgs.c.id == org_limits.c.org_id)
            .where(orgs.c.parent_id == p.id, org_limits.c.meter == OPS),
        )
        (pool,) = await _rows(
            h,
            sa.select(org_limits.c.allocated).where(
                org_limits.c.org_id == p.id, org_limits.c.meter == OPS
            ),
        )
        assert pool.allocated == sum(c.amount + c.charge for c in children)


async def test_concurrent_first_allocations_to_one_child_insert_its_row_once(h: Harness) -> None:
    """Many first allocations to children with no limit row, at once: every one answers, and
    each child's row is inserted once (no unique violation, no lost amount)."""
    root = h.root.org_id
    await _limit(h, root, OPS, 10_000_000)
    children = [(await h.create_org(root, f"Fresh {i}"))["id"] for i in range(3)]
    responses = await asyncio.gather(
        *(_put(h, root, child, (n + 1) * 10_000) for child in children for n in range(8))
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses][:3]
    await _chain_verifies(h)
