"""Monthly consumption per meter, for one org, its subtree, or each child's subtree.

Reads only the per-day counters (``usage_daily``), never raw events: a month is at most 31 rows
per org and meter. Periods are calendar months in the org's time zone.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from orgplane.core.access.principal import Principal
from orgplane.core.access.service import reach
from orgplane.core.errors import InvalidInput
from orgplane.db.engine import Reader
from orgplane.models import meters, org_limits, orgs, usage_daily
from orgplane.models.base import utcnow

Rollup = Literal["self", "subtree", "children"]
_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")
_PATH_END = "~"


@dataclass(frozen=True)
class Period:
    start: date  # first day
    end: date  # first day of the next period

    @property
    def label(self) -> str:
        return f"{self.start.year:04d}-{self.start.month:02d}"

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def previous(self) -> Period:
        last = self.start - timedelta(days=1)
        return month_of(last)


def month_of(day: date) -> Period:
    start = day.replace(day=1)
    days = calendar.monthrange(day.year, day.month)[1]
    return Period(start, start + timedelta(days=days))


def parse_period(text: str | None, today: date) -> Period:
    if text is None:
        return month_of(today)
    match = _PERIOD.match(text)
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
        raise InvalidInput.for_field("query.period", "must be a month as YYYY-MM, e.g. 2026-11")
    return month_of(date(int(match.group(1)), int(match.group(2)), 1))


def _pct(part: float, whole: float) -> float | None:
    return None if not whole else round(100.0 * part / whole, 2)


def _change(now: float, before: float) -> float | None:
    return None if not before else round(100.0 * (now - before) / before, 2)


async def report(
    conn: Reader,
    principal: Principal,
    org_ref: str,
    *,
    period: str | None = None,
    rollup: Rollup = "self",
) -> dict[str, Any]:
    org = await reach(conn, principal, org_ref, scope="usage:read")
    tz = ZoneInfo(org.timezone)
    today = utcnow().astimezone(tz).date()
    current = parse_period(period, today)
    # "As of": today in the current period, the last day of a past one; a future one has none.
    as_of = min(today, current.end - timedelta(days=1))
    elapsed = max(0, (as_of - current.start).days + 1) if as_of >= current.start else 0
    windows = _Windows(current, as_of)
    meter_rows = (await conn.execute(sa.select(meters).order_by(meters.c.name))).all()

    groups: list[tuple[Any, str | None]]
    if rollup == "children":
        groups = list(await _children(conn, org))
    else:
        groups = [(org, org.path if rollup == "subtree" else None)]
    sums = await _sums(conn, [g[0].id if g[1] is None else g[1] for g in groups], windows)
    limits = await _limits(conn, [g[0].id for g in groups])

    entries = []
    for group_org, path in groups:
        key = group_org.id if path is None else path
        items = []
        for meter in meter_rows:
            s = sums.get((key, meter.name), _ZERO)
            limit = limits.get((group_org.id, meter.name))
            consumed = s["period"]
            forecast = round(consumed / elapsed * current.days) if elapsed else consumed
            items.append(
                {
                    "meter": meter.name,
                    "unit": meter.unit,
                    "consumed": consumed,
                    "extra": max(0, consumed - limit) if limit is not None else 0,
                    "limit": limit,
                    "utilization_pct": _pct(consumed, limit) if limit is not None else None,
                    "forecast": forecast,
                    "forecast_utilization_pct": _pct(forecast, limit)
                    if limit is not None
                    else None,
                    "last_week": s["week"],
                    "change_vs_previous_week_pct": _change(s["week"], s["prev_week"]),
                    "previous_period": s["prev_period"],
                    "change_vs_previous_period_pct": _change(consumed, s["prev_period"]),
                }
            )
        entries.append({"org": group_org, "meters": items})
    return {
        "org": org,
        "period": current.label,
        "rollup": rollup,
        "timezone": org.timezone,
        "last_reset": datetime.combine(current.start, time(), tz),
        "next_reset": datetime.combine(current.end, time(), tz),
        "days_elapsed": elapsed,
        "days_in_period": current.days,
        "entries": entries,
    }


_ZERO = {"period": 0, "week": 0, "prev_week": 0, "prev_period": 0}


@dataclass(frozen=True)
class _Windows:
    period: Period
    as_of: date

    @property
    def week(self) -> tuple[date, date]:
        end = self.as_of + timedelta(days=1)
        return end - timedelta(days=7), end

    @property
    def prev_week(self) -> tuple[date, date]:
        start, _ = self.week
        return start - timedelta(days=7), start

    @property
    def earliest(self) -> date:
        return min(self.period.previous().start, self.prev_week[0])


def _between(bounds: tuple[date, date]) -> sa.ColumnElement[bool]:
    return sa.and_(usage_daily.c.day >= bounds[0], usage_daily.c.day < bounds[1])


async def _sums(
    conn: Reader, keys: list[int | str], windows: _Windows
) -> dict[tuple[int | str, str], dict[str, int]]:
    """Sums per (org id or subtree path, meter) over the four windows, in one query."""
    previous = windows.period.previous()
    buckets = {
        "period": _between((windows.period.start, windows.period.end)),
        "week": _between(windows.week),
        "prev_week": _between(windows.prev_week),
        "prev_period": _between((previous.start, previous.end)),
    }
    columns = [
        sa.func.coalesce(sa.func.sum(sa.case((cond, usage_daily.c.quantity), else_=0)), 0).label(k)
        for k, cond in buckets.items()
    ]
    out: dict[tuple[int | str, str], dict[str, int]] = {}
    paths = [k for k in keys if isinstance(k, str)]
    ids = [k for k in keys if isinstance(k, int)]
    window = sa.and_(usage_daily.c.day >= windows.earliest, usage_daily.c.day < windows.period.end)
    if ids:
        statement = (
            sa.select(usage_daily.c.org_id, usage_daily.c.meter, *columns)
            .where(usage_daily.c.org_id.in_(ids), window)
            .group_by(usage_daily.c.org_id, usage_daily.c.meter)
        )
        for row in await conn.execute(statement):
            out[(row.org_id, row.meter)] = {k: int(getattr(row, k)) for k in buckets}
    if paths:
        # Every subtree in one statement: each counter row joins the group(s) whose path range
        # holds its org's path (a range scan on the unique path index per group).
        group = orgs.alias("grp")
        member = orgs.alias("member")
        in_group = sa.and_(member.c.path >= group.c.path, member.c.path < group.c.path + _PATH_END)
        statement = (
            sa.select(group.c.path.label("group_path"), usage_daily.c.meter, *columns)
            .select_from(
                usage_daily.join(member, member.c.id == usage_daily.c.org_id).join(group, in_group)
            )
            .where(group.c.path.in_(paths), window)
            .group_by(group.c.path, usage_daily.c.meter)
        )
        for row in await conn.execute(statement):
            out[(row.group_path, row.meter)] = {k: int(getattr(row, k)) for k in buckets}
    return out


async def _limits(conn: Reader, org_ids: list[int]) -> dict[tuple[int, str], int]:
    rows = await conn.execute(
        sa.select(org_limits.c.org_id, org_limits.c.meter, org_limits.c.amount).where(
            org_limits.c.org_id.in_(org_ids)
        )
    )
    return {(r.org_id, r.meter): int(r.amount) for r in rows}


async def _children(conn: Reader, org: Any) -> list[tuple[Any, str]]:
    rows = (
        await conn.execute(
            sa.select(orgs)
            .where(orgs.c.parent_id == org.id, orgs.c.deleted_at.is_(None))
            .order_by(orgs.c.id)
            .limit(1000)
        )
    ).all()
    return [(row, row.path) for row in rows]
