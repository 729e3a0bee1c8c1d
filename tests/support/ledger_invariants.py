"""Balances, usage and the ledger read straight from the database, and the invariants of
DESIGN.md ("Meters, allocations and the ledger") that must hold over them after every commit;
shared by the ledger property and concurrency tests."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from orgplane.core.credits.ledger import verify
from orgplane.core.usage.counters import local_today, period_start
from orgplane.models import ledger, org_limits, orgs, usage_daily


def round_up(value: int, step: int) -> int:
    return -(-value // step) * step


@dataclass
class Bal:
    amount: int = 0
    allocated: int = 0
    charge: int = 0


@dataclass
class Stored:
    public: dict[int, str]  # org id -> public id
    parent: dict[str, str | None]
    limits: dict[tuple[str, str], Bal]
    consumed: dict[tuple[str, str], int]
    ledger: list[Any]
    problems: list[Any]


async def load(db: Any) -> Stored:
    async with db.read() as conn:
        org_rows = (
            await conn.execute(sa.select(orgs.c.id, orgs.c.public_id, orgs.c.parent_id))
        ).all()
        public = {r.id: r.public_id for r in org_rows}
        limits = {
            (public[r.org_id], r.meter): Bal(int(r.amount), int(r.allocated), int(r.charge))
            for r in await conn.execute(sa.select(org_limits))
        }
        since = period_start(local_today("UTC"))  # every org of these trees is in UTC
        consumed = {
            (public[r.org_id], r.meter): int(r.quantity)
            for r in await conn.execute(
                sa.select(
                    usage_daily.c.org_id,
                    usage_daily.c.meter,
                    sa.func.sum(usage_daily.c.quantity).label("quantity"),
                )
                .where(usage_daily.c.day >= since)
                .group_by(usage_daily.c.org_id, usage_daily.c.meter)
            )
        }
        rows = list((await conn.execute(sa.select(ledger).order_by(ledger.c.id))).all())
        problems = await verify(conn)
    return Stored(
        public=public,
        parent={
            r.public_id: public[r.parent_id] if r.parent_id is not None else None for r in org_rows
        },
        limits=limits,
        consumed={k: v for k, v in consumed.items() if v},
        ledger=rows,
        problems=problems,
    )


def check_invariants(stored: Stored, root: str, steps: dict[str, int], hard: set[str]) -> None:
    """The five invariants (what can be read from the database alone) for a single tree."""
    limits = stored.limits
    # 1. Conservation, from the rows and the tree's parent links alone.
    held: dict[tuple[str, str], int] = defaultdict(int)
    for (org, meter), b in limits.items():
        parent = stored.parent[org]
        if parent is not None and b.amount + b.charge:
            assert (parent, meter) in limits, f"{org} holds {meter} its parent has no row for"
            held[(parent, meter)] += b.amount + b.charge
    for (org, meter), b in limits.items():
        assert b.amount - b.allocated >= 0, (org, meter, b)
        assert b.allocated == held[(org, meter)], (org, meter, b, held[(org, meter)])
        assert b.amount >= 0 and b.charge >= 0, (org, meter, b)
    for meter in steps:
        if (root, meter) in limits:
            # No quota created or lost: the root's limit is in some pool or paid as a charge.
            in_tree = sum(
                b.amount - b.allocated + b.charge for (_, m), b in limits.items() if m == meter
            )
            assert in_tree == limits[(root, meter)].amount, meter
    for (org, meter), b in limits.items():
        # 3. Every amount is on the step, released and deleted orgs' residues included.
        assert b.amount % steps[meter] == 0, (org, meter, b)
        # 2. On the hard meter, nothing ever leaves an org below what it consumed.
        if meter in hard:
            assert b.amount - b.allocated >= stored.consumed.get((org, meter), 0), (org, meter, b)
    # 4. The ledger: verify agrees, each row's balances-after are the replay's, the last row of
    # each (org, meter) gives the stored balances, and nothing is in the ledger but not stored.
    assert stored.problems == [], [str(p) for p in stored.problems]
    amount: dict[tuple[str, str], int] = defaultdict(int)
    allocated: dict[tuple[str, str], int] = defaultdict(int)
    charge: dict[tuple[str, str], int] = defaultdict(int)
    last: dict[tuple[str, str], tuple[int, int]] = {}
    for e in stored.ledger:
        key = (stored.public[e.org_id], e.meter)
        amount[key] += e.delta
        charge[key] += e.charge_delta
        if e.parent_id is not None:
            parent_key = (stored.public[e.parent_id], e.meter)
            allocated[parent_key] += e.delta + e.charge_delta
            assert (e.parent_amount, e.parent_allocated) == (
                amount[parent_key],
                allocated[parent_key],
            ), e
            last[parent_key] = (e.parent_amount, e.parent_allocated)
        else:
            assert e.kind == "limit.set" and e.parent_amount is None, e
        assert (e.org_amount, e.org_allocated) == (amount[key], allocated[key]), e
        last[key] = (e.org_amount, e.org_allocated)
    assert set(last) == set(limits)
    for key, b in limits.items():
        assert last[key] == (b.amount, b.allocated), key
        assert (amount[key], allocated[key], charge[key]) == (b.amount, b.allocated, b.charge), key


async def deadlocks(db: Any) -> int | None:
    """PostgreSQL's count of deadlocks detected in this database (None on SQLite)."""
    if db.is_sqlite:
        return None
    async with db.read() as conn:
        await conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        value = (
            await conn.execute(
                sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            )
        ).scalar_one()
    return int(value)
