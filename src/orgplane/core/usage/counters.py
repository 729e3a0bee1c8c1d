"""What orgs consumed in their current period, read from the per-day counters."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from orgplane.db.engine import Reader
from orgplane.models import usage_daily
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
