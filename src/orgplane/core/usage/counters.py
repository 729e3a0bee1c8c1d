"""What orgs consumed in their current period, read from the per-day counters."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from orgplane.db.engine import Reader, Tx
from orgplane.models import orgs, usage_daily, usage_subtree_daily
from orgplane.models.base import utcnow


def local_today(timezone: str) -> date:
    return utcnow().astimezone(ZoneInfo(timezone)).date()


def period_start(day: date) -> date:
    """First day of the (monthly) period containing ``day``."""
    return day.replace(day=1)


async def consumed_this_period(
    conn: Reader, orgs: Iterable[Any], meter: str | None = None
) -> dict[tuple[int, str], int]:
    """Own consumption per (org id, meter) since the start of each org's current period.

    ``orgs`` are rows with ``id`` and ``timezone``; orgs in one time zone share a query.
    """
    by_zone: dict[str, list[int]] = {}
    for org in orgs:
        by_zone.setdefault(org.timezone, []).append(org.id)
    totals: dict[tuple[int, str], int] = {}
    for zone, ids in by_zone.items():
        statement = (
            sa.select(
                usage_daily.c.org_id,
                usage_daily.c.meter,
                sa.func.sum(usage_daily.c.quantity).label("quantity"),
            )
            .where(
                usage_daily.c.org_id.in_(ids),
                usage_daily.c.day >= period_start(local_today(zone)),
            )
            .group_by(usage_daily.c.org_id, usage_daily.c.meter)
        )
        if meter is not None:
            statement = statement.where(usage_daily.c.meter == meter)
        for row in await conn.execute(statement):
            totals[(row.org_id, row.meter)] = int(row.quantity)
    return totals


def path_ids(path: str) -> list[int]:
    """The org ids on a materialized path ("/1/5/9/"), root first."""
    return [int(part) for part in path.strip("/").split("/")]


async def carry_subtree_usage(tx: Tx, org_id: int, old_path: str, new_parent_path: str) -> None:
    """Move an org's per-subtree day counters from its old ancestors to its new ones.

    One statement: the org's own ``usage_subtree_daily`` rows are upserted negated into each
    ancestor it leaves and as they are into each ancestor it gains (common ancestors keep their
    totals untouched). The caller holds the tree lock FOR UPDATE, so no ingestion runs meanwhile.
    Rows left at zero are kept; they add nothing to a sum.
    """
    old = set(path_ids(old_path)) - {org_id}
    new = set(path_ids(new_parent_path))
    leaving, joining = sorted(old - new), sorted(new - old)
    if not leaving and not joining:
        return
    own = usage_subtree_daily.alias("own")
    quantity = (
        sa.case((orgs.c.id.in_(leaving), -own.c.quantity), else_=own.c.quantity)
        if leaving
        else own.c.quantity
    )
    select = (
        sa.select(orgs.c.id, own.c.meter, own.c.day, own.c.root_id, quantity)
        .select_from(own.join(orgs, orgs.c.id.in_(leaving + joining)))
        .where(own.c.org_id == org_id)
        .order_by(orgs.c.id, own.c.meter, own.c.day)
    )
    insert = pg_insert if tx.is_postgres else sqlite_insert
    statement = insert(usage_subtree_daily).from_select(
        ["org_id", "meter", "day", "root_id", "quantity"], select
    )
    await tx.execute(
        statement.on_conflict_do_update(
            index_elements=["org_id", "meter", "day"],
            set_={"quantity": usage_subtree_daily.c.quantity + statement.excluded.quantity},
        )
    )


async def daily_totals(
    conn: Reader, org_id: int, start: date, end: date, meters: Iterable[str]
) -> dict[tuple[date, str], int]:
    """An org's own usage per (day, meter) for days in ``[start, end)``, from the day counters
    (for an org the caller has already reached)."""
    rows = await conn.execute(
        sa.select(usage_daily.c.day, usage_daily.c.meter, usage_daily.c.quantity).where(
            usage_daily.c.org_id == org_id,
            usage_daily.c.meter.in_(list(meters)),
            usage_daily.c.day >= start,
            usage_daily.c.day < end,
        )
    )
    return {(row.day, row.meter): int(row.quantity) for row in rows}
