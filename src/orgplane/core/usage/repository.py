"""The SQL of usage ingestion: the batch's orgs and meters, the hard limits locked, and (on
SQLite) the events stored and folded into the day counters. PostgreSQL stores and folds in one
statement (``repository_pg``). The rules are ``ingest``'s."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from orgplane.db.engine import Tx
from orgplane.models import meters, org_limits, orgs, usage_daily, usage_events, usage_subtree_daily


@dataclass(frozen=True, slots=True)
class BatchOrg:
    """An org a batch reports usage for, with what its events need: its days and ancestors."""

    id: int
    public_id: str
    root_id: int
    depth: int
    timezone: str
    zone: tzinfo  # datetime.UTC for UTC: the same days, converted in a fifth of the time
    ancestors: tuple[int, ...]  # the ids on its path, root first, itself last
    current_start: date  # first day of its current period
    previous_start: date  # the earliest day an event may still be counted on


@dataclass(slots=True)
class Event:
    """One checked event of a batch, ready to store (``index`` is its place in the request)."""

    index: int
    org: BatchOrg
    meter: str
    quantity: int
    occurred_at: datetime
    day: date  # in the org's time zone
    key: str


_METER_MODES = sa.select(meters.c.name, meters.c.enforcement)
_ORGS_BY_PUBLIC_ID = sa.select(
    orgs.c.id,
    orgs.c.public_id,
    orgs.c.root_id,
    orgs.c.path,
    orgs.c.depth,
    orgs.c.timezone,
    orgs.c.deleted_at,
).where(orgs.c.public_id.in_(sa.bindparam("public_ids", expanding=True)))


async def meter_modes(tx: Tx) -> dict[str, str]:
    """Each meter's enforcement (soft or hard)."""
    return {row.name: row.enforcement for row in await tx.execute(_METER_MODES)}


async def orgs_by_public_id(tx: Tx, public_ids: list[str]) -> list[Any]:
    return list(await tx.execute(_ORGS_BY_PUBLIC_ID, {"public_ids": public_ids}))


async def lock_limits(tx: Tx, hard: list[Event]) -> dict[tuple[int, str], tuple[int, int]]:
    """Lock (PostgreSQL) and read the limits of the hard meters used: (amount, allocated)."""
    pairs = sorted({(e.org.id, e.meter) for e in hard})
    statement = (
        sa.select(
            org_limits.c.org_id, org_limits.c.meter, org_limits.c.amount, org_limits.c.allocated
        )
        .select_from(org_limits.join(orgs, orgs.c.id == org_limits.c.org_id))
        .where(sa.tuple_(org_limits.c.org_id, org_limits.c.meter).in_(pairs))
    )
    if tx.is_postgres:
        # The rows are locked in the ORDER BY's order: ancestors first, as the allocator does.
        statement = statement.order_by(orgs.c.depth, orgs.c.id, org_limits.c.meter).with_for_update(
            of=org_limits
        )
    return {
        (row.org_id, row.meter): (int(row.amount), int(row.allocated))
        for row in await tx.execute(statement)
    }


_SQLITE_INSERT_EVENTS = (
    sqlite_insert(usage_events)
    .on_conflict_do_nothing(index_elements=["root_id", "idempotency_key"])
    .returning(usage_events.c.idempotency_key)
)


def _upsert(table: sa.Table) -> Any:
    statement = sqlite_insert(table)
    return statement.on_conflict_do_update(
        index_elements=["org_id", "meter", "day"],
        set_={"quantity": table.c.quantity + statement.excluded.quantity},
    ).returning(table.c.day)


# Executed with a list of rows, a statement with RETURNING goes out as multi-row VALUES of up
# to 1,000 rows each ("insertmanyvalues"): compiled once, no statement per row.
_SQLITE_UPSERT_COUNTERS = _upsert(usage_daily)
_SQLITE_UPSERT_SUBTREE_COUNTERS = _upsert(usage_subtree_daily)


async def insert_events(tx: Tx, events: list[Event], now: datetime) -> set[str]:
    """Insert the events whose key is new to the tenant tree (SQLite); return the keys inserted."""
    result = await tx.execute(
        _SQLITE_INSERT_EVENTS,
        [
            {
                "root_id": e.org.root_id,
                "idempotency_key": e.key,
                "org_id": e.org.id,
                "meter": e.meter,
                "quantity": e.quantity,
                "occurred_at": e.occurred_at,
                "day": e.day,
                "received_at": now,
            }
            for e in events
        ],
    )
    return set(result.scalars())


async def fold(tx: Tx, new: list[Event]) -> None:
    """Add the inserted events to the per-day counters, then to the per-subtree day counters of
    each event's org and every ancestor (SQLite): one upsert each, summed in Python first."""
    buckets: defaultdict[tuple[int, str, date], int] = defaultdict(int)
    by_id: dict[int, BatchOrg] = {}
    for event in new:
        if event.quantity:
            buckets[(event.org.id, event.meter, event.day)] += event.quantity
            by_id[event.org.id] = event.org
    if not buckets:
        return
    rows = [
        {
            "org_id": org_id,
            "meter": meter,
            "day": day,
            "root_id": by_id[org_id].root_id,
            "quantity": q,
        }
        for (org_id, meter, day), q in sorted(buckets.items())
    ]
    await tx.execute(_SQLITE_UPSERT_COUNTERS, rows)
    subtree: defaultdict[tuple[int, str, date], int] = defaultdict(int)
    for (org_id, meter, day), q in buckets.items():
        for ancestor in by_id[org_id].ancestors:
            subtree[(ancestor, meter, day)] += q
    root_id = rows[0]["root_id"]  # a batch stays within one tenant tree
    await tx.execute(
        _SQLITE_UPSERT_SUBTREE_COUNTERS,
        [
            {"org_id": org_id, "meter": meter, "day": day, "root_id": root_id, "quantity": q}
            for (org_id, meter, day), q in sorted(subtree.items())
        ],
    )
