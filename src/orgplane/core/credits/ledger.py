"""Reading the ledger: an org's balances, its ledger rows, and the whole-ledger verification."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from orgplane.core.access.principal import Principal
from orgplane.core.access.service import out_of_reach, reach
from orgplane.core.errors import InvalidInput
from orgplane.core.pagination import (
    decode_cursor,
    encode_cursor,
    newest_first_batches,
    time_window,
)
from orgplane.core.usage.counters import consumed_this_period
from orgplane.db.engine import Reader
from orgplane.models import ledger, meters, org_limits, orgs, usage_daily

EXPORT_BATCH = 1000
KINDS = ("limit.set", "allocation", "release", "move.out", "move.in")


async def credits_report(
    conn: Reader, principal: Principal, org_ref: str
) -> tuple[Any, list[dict[str, Any]]]:
    """Per meter: limit, allocated to children, available, consumed this period, extra."""
    org = await reach(conn, principal, org_ref, scope="credits:read", include_deleted=True)
    meter_rows = (await conn.execute(sa.select(meters).order_by(meters.c.name))).all()
    limits = {
        row.meter: row
        for row in await conn.execute(sa.select(org_limits).where(org_limits.c.org_id == org.id))
    }
    consumed = await consumed_this_period(conn, [org])
    out = []
    for meter in meter_rows:
        row = limits.get(meter.name)
        used = consumed.get((org.id, meter.name), 0)
        amount = int(row.amount) if row else None
        allocated = int(row.allocated) if row else 0
        available = amount - allocated if amount is not None else None
        out.append(
            {
                "meter": meter.name,
                "unit": meter.unit,
                "step": int(meter.step),
                "enforcement": meter.enforcement,
                "limit": amount,
                "allocated": allocated,
                "available": available,
                "deployment_charge": int(row.charge) if row else 0,
                "consumed": used,
                "extra": max(0, used - available) if available is not None else 0,
            }
        )
    return org, out


async def balances(conn: Reader, org_ids: list[int], meter: str) -> dict[int, tuple[int, int]]:
    """(limit, available) of one meter per org, for orgs the caller has already reached."""
    if not org_ids:
        return {}
    rows = await conn.execute(
        sa.select(org_limits.c.org_id, org_limits.c.amount, org_limits.c.allocated).where(
            org_limits.c.org_id.in_(org_ids), org_limits.c.meter == meter
        )
    )
    return {r.org_id: (int(r.amount), int(r.amount) - int(r.allocated)) for r in rows}


async def allocated_to_children(
    conn: Reader, parent: Any, meter: str, *, plans: frozenset[str] | None = None
) -> int:
    """What ``parent`` allocated of one meter to its live children (on these plans): one sum."""
    statement = (
        sa.select(sa.func.coalesce(sa.func.sum(org_limits.c.amount), 0))
        .select_from(org_limits.join(orgs, orgs.c.id == org_limits.c.org_id))
        .where(
            orgs.c.parent_id == parent.id,
            orgs.c.deleted_at.is_(None),
            org_limits.c.meter == meter,
        )
    )
    if plans is not None:
        statement = statement.where(orgs.c.plan.in_(sorted(plans)))
    return int((await conn.execute(statement)).scalar_one())


async def charges(conn: Reader, org_ids: list[int], meter: str) -> dict[int, int]:
    """The deployment charge each org's allocation of one meter costs its parent, for orgs the
    caller has already reached (absent: none)."""
    if not org_ids:
        return {}
    rows = await conn.execute(
        sa.select(org_limits.c.org_id, org_limits.c.charge).where(
            org_limits.c.org_id.in_(org_ids), org_limits.c.meter == meter
        )
    )
    return {r.org_id: int(r.charge) for r in rows}


@dataclass(frozen=True)
class LedgerFilters:
    meter: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def check(self) -> LedgerFilters:
        if self.kind is not None and self.kind not in KINDS:
            raise InvalidInput.for_field("query.kind", f"must be one of {', '.join(KINDS)}")
        since, until = time_window(self.since, self.until)
        return dataclasses.replace(self, since=since, until=until)


_org = orgs.alias("ledger_org")
_parent = orgs.alias("ledger_parent")
_COLUMNS = (
    *ledger.c,
    _org.c.public_id.label("org_public_id"),
    _parent.c.public_id.label("parent_public_id"),
)


def _statement(org: Any, filters: LedgerFilters) -> Any:
    """Rows where the org gained or lost an amount, or its pool paid or got one back."""
    statement = (
        sa.select(*_COLUMNS)
        .select_from(
            ledger.join(_org, _org.c.id == ledger.c.org_id).outerjoin(
                _parent, _parent.c.id == ledger.c.parent_id
            )
        )
        .where(sa.or_(ledger.c.org_id == org.id, ledger.c.parent_id == org.id))
    )
    if filters.meter:
        statement = statement.where(ledger.c.meter == filters.meter)
    if filters.kind:
        statement = statement.where(ledger.c.kind == filters.kind)
    if filters.since:
        statement = statement.where(ledger.c.at >= filters.since)
    if filters.until:
        statement = statement.where(ledger.c.at < filters.until)
    return statement


async def target(conn: Reader, principal: Principal, org_ref: str) -> Any:
    return await reach(conn, principal, org_ref, scope="credits:read", include_deleted=True)


async def page(
    conn: Reader,
    principal: Principal,
    org: Any,
    filters: LedgerFilters,
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """A page of the org's ledger as ``principal`` may see it (``as_seen_by``)."""
    statement = _statement(org, filters.check())
    before = decode_cursor(cursor, int)
    if before is not None:
        statement = statement.where(ledger.c.id < before[0])
    rows = list((await conn.execute(statement.order_by(ledger.c.id.desc()).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = await as_seen_by(conn, principal, rows[:limit])
    return rows, encode_cursor(rows[-1].id) if more else None


async def stream(
    conn: Reader, principal: Principal, org: Any, filters: LedgerFilters
) -> AsyncIterator[list[Any]]:
    statement = _statement(org, filters.check())
    async for batch in newest_first_batches(conn, statement, ledger.c.id, size=EXPORT_BATCH):
        yield await as_seen_by(conn, principal, batch)


async def as_seen_by(conn: Reader, principal: Principal, rows: list[Any]) -> list[Any]:
    """The rows with a parent outside the principal's reach shown as null: a key of a child
    reads its own allocations without learning its parent's id."""
    hidden = await out_of_reach(
        conn, principal, {r.parent_public_id for r in rows if r.parent_public_id is not None}
    )
    if not hidden:
        return rows
    return [
        SimpleNamespace(**{**r._asdict(), "parent_public_id": None})
        if r.parent_public_id in hidden
        else r
        for r in rows
    ]


@dataclass(frozen=True)
class Disagreement:
    org_id: int
    meter: str
    field: str
    stored: int
    expected: int

    def __str__(self) -> str:
        return (
            f"org {self.org_id} meter {self.meter}: {self.field} is {self.stored}, "
            f"expected {self.expected}"
        )


async def verify(conn: Reader) -> list[Disagreement]:
    """Recompute every balance from the ledger and the tree, and compare with ``org_limits``.

    Checks, for each org and meter (DESIGN.md's invariants):
    - the replayed ledger: each amount and charge is the sum of its ledger deltas, each
      parent's ``allocated`` the sum of its debits, and every row's balances-after are the
      running sums up to that row (4.);
    - conservation: each parent's ``allocated`` is the sum of its children's amount + charge,
      and no pool is negative (1.);
    - every amount is a multiple of its meter's step (3.);
    - no quota stranded: a deleted or deactivated org keeps at most what it handed on plus what
      it consumed in a period, rounded up to the step (5.: the rest went back to its parent).
    """
    amount: dict[tuple[int, str], int] = defaultdict(int)
    charge: dict[tuple[int, str], int] = defaultdict(int)
    paid: dict[tuple[int, str], int] = defaultdict(int)
    problems: list[Disagreement] = []
    last = 0
    while True:
        batch = (
            await conn.execute(
                sa.select(
                    ledger.c.id,
                    ledger.c.org_id,
                    ledger.c.parent_id,
                    ledger.c.meter,
                    ledger.c.delta,
                    ledger.c.charge_delta,
                    ledger.c.org_amount,
                    ledger.c.org_allocated,
                    ledger.c.parent_allocated,
                )
                .where(ledger.c.id > last)
                .order_by(ledger.c.id)
                .limit(10_000)
            )
        ).all()
        if not batch:
            break
        for row in batch:
            key = (row.org_id, row.meter)
            amount[key] += row.delta
            charge[key] += row.charge_delta
            running = [
                (f"ledger row {row.id}: org amount", row.org_amount, amount[key], key),
                (f"ledger row {row.id}: org allocated", row.org_allocated, paid[key], key),
            ]
            if row.parent_id is not None:
                parent_key = (row.parent_id, row.meter)
                paid[parent_key] += row.delta + row.charge_delta
                running.append(
                    (
                        f"ledger row {row.id}: parent allocated",
                        row.parent_allocated,
                        paid[parent_key],
                        parent_key,
                    )
                )
            for field, value, expected, at in running:
                if value != expected:
                    problems.append(Disagreement(at[0], at[1], field, int(value), expected))
        last = batch[-1].id
    stored = {
        (row.org_id, row.meter): row
        for row in await conn.execute(
            sa.select(
                org_limits,
                orgs.c.parent_id,
                orgs.c.status,
                orgs.c.deleted_at,
                meters.c.step,
            )
            .join(orgs, orgs.c.id == org_limits.c.org_id)
            .join(meters, meters.c.name == org_limits.c.meter)
        )
    }
    held_by_children: dict[tuple[int, str], int] = defaultdict(int)
    for (_, meter), row in stored.items():
        if row.parent_id is not None:
            held_by_children[(row.parent_id, meter)] += int(row.amount) + int(row.charge)
    for key in sorted(set(stored) | set(amount) | set(paid)):
        row = stored.get(key)
        have = (int(row.amount), int(row.allocated), int(row.charge)) if row else (0, 0, 0)
        checks = (
            ("amount", have[0], amount.get(key, 0)),
            ("charge", have[2], charge.get(key, 0)),
            ("allocated", have[1], paid.get(key, 0)),
            ("allocated (sum over children)", have[1], held_by_children.get(key, 0)),
        )
        for field, value, expected in checks:
            if value != expected:
                problems.append(Disagreement(key[0], key[1], field, value, expected))
        if have[0] < have[1]:
            problems.append(Disagreement(key[0], key[1], "available", have[0] - have[1], 0))
        if row is not None and have[0] % int(row.step):
            expected = have[0] - have[0] % int(row.step)
            problems.append(
                Disagreement(key[0], key[1], "amount (step multiple)", have[0], expected)
            )
    problems.extend(await _stranded(conn, stored))
    return problems


async def _stranded(conn: Reader, stored: dict[tuple[int, str], Any]) -> list[Disagreement]:
    """Deleted or deactivated orgs holding more than they handed on plus what they consumed.

    What they consumed is taken in the period where it was largest (a month, in the org's own
    days): the release kept at most that, so a larger amount was given after the release, or
    never given back."""
    gone = {
        key: row
        for key, row in stored.items()
        if (row.deleted_at is not None or row.status == "deactivated") and int(row.amount) > 0
    }
    if not gone:
        return []
    org_ids = sorted({org_id for org_id, _ in gone})
    monthly: dict[tuple[int, str, int, int], int] = defaultdict(int)
    for start in range(0, len(org_ids), 1000):
        rows = await conn.execute(
            sa.select(
                usage_daily.c.org_id, usage_daily.c.meter, usage_daily.c.day, usage_daily.c.quantity
            ).where(usage_daily.c.org_id.in_(org_ids[start : start + 1000]))
        )
        for row in rows:
            day = row.day
            monthly[(row.org_id, row.meter, day.year, day.month)] += int(row.quantity)
    most: dict[tuple[int, str], int] = defaultdict(int)
    for (org_id, meter, _, _), quantity in monthly.items():
        most[(org_id, meter)] = max(most[(org_id, meter)], quantity)
    problems = []
    for key, row in sorted(gone.items()):
        step = int(row.step)
        needed = int(row.allocated) + most.get(key, 0)
        keep = min(int(row.amount), -(-needed // step) * step)
        if int(row.amount) > keep:
            state = "deleted" if row.deleted_at is not None else "deactivated"
            problems.append(
                Disagreement(key[0], key[1], f"amount held while {state}", int(row.amount), keep)
            )
    return problems
