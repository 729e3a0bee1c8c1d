"""Monthly consumption per meter, for one org, its subtree, or each child's subtree.

Reads only the per-day counters, never raw events: ``usage_daily`` for an org's own usage and
``usage_subtree_daily`` (one row per ancestor, meter and day, kept by ingestion and moves) for a
subtree's, so a month is at most 31 rows per org and meter whatever the subtree's size. Periods
are calendar months in the org's time zone.
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
from orgplane.db.engine import PreparedSelect, Reader, all_rows
from orgplane.models import meters, org_limits, orgs, usage_daily, usage_subtree_daily
from orgplane.models.base import utcnow

Rollup = Literal["self", "subtree", "children"]
_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")


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
    children: list[Any] | None = None,
) -> dict[str, Any]:
    """The period's consumption per meter. ``rollup="children"`` reports each child's subtree:
    the first 1,000 children, or the given rows of them (a page a surface shows)."""
    org = await reach(conn, principal, org_ref, scope="usage:read")
    tz = ZoneInfo(org.timezone)
    today = utcnow().astimezone(tz).date()
    current = parse_period(period, today)
    # "As of": today in the current period, the last day of a past one; a future one has none.
    as_of = min(today, current.end - timedelta(days=1))
    elapsed = max(0, (as_of - current.start).days + 1) if as_of >= current.start else 0
    windows = _Windows(current, as_of)
    meter_rows = (await conn.execute(sa.select(meters).order_by(meters.c.name))).all()

    if rollup != "children":
        groups = [org]
    elif children is not None:
        groups = [c for c in children if c.parent_id == org.id]
    else:
        groups = await _children(conn, org)
    counters = usage_daily if rollup == "self" else usage_subtree_daily
    sums = await _sums(conn, counters, [g.id for g in groups], windows)
    limits = await _limits(conn, [g.id for g in groups])

    entries = []
    for group_org in groups:
        items = []
        for meter in meter_rows:
            s = sums.get((group_org.id, meter.name), _ZERO)
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


async def daily(
    conn: Reader, principal: Principal, org_ref: str, *, period: str | None = None
) -> dict[str, Any]:
    """The subtree's consumption per meter and day of the period (days without usage are 0),
    with each meter's limit: what a chart of the month draws."""
    org = await reach(conn, principal, org_ref, scope="usage:read")
    today = utcnow().astimezone(ZoneInfo(org.timezone)).date()
    current = parse_period(period, today)
    meter_rows = (await conn.execute(sa.select(meters).order_by(meters.c.name))).all()
    rows = await conn.execute(
        sa.select(usage_subtree_daily.c.day, usage_subtree_daily.c.meter,
                  usage_subtree_daily.c.quantity).where(
            usage_subtree_daily.c.org_id == org.id,
            usage_subtree_daily.c.day >= current.start,
            usage_subtree_daily.c.day < current.end,
        )
    )  # fmt: skip
    quantities = {(row.meter, row.day): int(row.quantity) for row in rows}
    limits = await _limits(conn, [org.id])
    days = [current.start + timedelta(days=i) for i in range(current.days)]
    return {
        "org": org,
        "period": current.label,
        "today": today,
        "days": days,
        "meters": [
            {
                "meter": meter.name,
                "unit": meter.unit,
                "limit": limits.get((org.id, meter.name)),
                "daily": [quantities.get((meter.name, day), 0) for day in days],
            }
            for meter in meter_rows
        ],
    }


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


async def _sums(
    conn: Reader, counters: sa.Table, ids: list[int], windows: _Windows
) -> dict[tuple[int, str], dict[str, int]]:
    """Sums per (org id, meter) over the four windows, in one query over ``counters``
    (``usage_daily``: the orgs' own usage; ``usage_subtree_daily``: their subtrees')."""
    day = counters.c.day

    def between(bounds: tuple[date, date]) -> sa.ColumnElement[bool]:
        return sa.and_(day >= bounds[0], day < bounds[1])

    previous = windows.period.previous()
    buckets = {
        "period": between((windows.period.start, windows.period.end)),
        "week": between(windows.week),
        "prev_week": between(windows.prev_week),
        "prev_period": between((previous.start, previous.end)),
    }
    columns = [
        sa.func.coalesce(sa.func.sum(sa.case((cond, counters.c.quantity), else_=0)), 0).label(k)
        for k, cond in buckets.items()
    ]
    out: dict[tuple[int, str], dict[str, int]] = {}
    if not ids:
        return out
    statement = (
        sa.select(counters.c.org_id, counters.c.meter, *columns)
        .where(counters.c.org_id.in_(ids), day >= windows.earliest, day < windows.period.end)
        .group_by(counters.c.org_id, counters.c.meter)
    )
    for row in await conn.execute(statement):
        out[(row.org_id, row.meter)] = {k: int(getattr(row, k)) for k in buckets}
    return out


async def _limits(conn: Reader, org_ids: list[int]) -> dict[tuple[int, str], int]:
    rows = await conn.execute(
        sa.select(org_limits.c.org_id, org_limits.c.meter, org_limits.c.amount).where(
            org_limits.c.org_id.in_(org_ids)
        )
    )
    return {(r.org_id, r.meter): int(r.amount) for r in rows}


async def _children(conn: Reader, org: Any) -> list[Any]:
    rows = (
        await conn.execute(
            sa.select(orgs)
            .where(orgs.c.parent_id == org.id, orgs.c.deleted_at.is_(None))
            .order_by(orgs.c.id)
            .limit(1000)
        )
    ).all()
    return list(rows)


# --- utilization bars: each listed child's most used meter, this period ----------------------
#
# A page of children shows one bar per child: the period's consumption of its subtree against
# its allocation. Two statements, prepared once on the driver, read just that: the listed
# children's limits, then the period's sums of those that have one (a child without a limit
# shows none and costs nothing more). A page holds at most ``UTILIZATION_SLOTS`` children;
# longer lists are read in slices of that many.

UTILIZATION_SLOTS = 50
_NO_ORG = -1  # fills the slots a shorter list leaves free: no org has it
_SLOT_NAMES = [f"org{i}" for i in range(UTILIZATION_SLOTS)]
_LIMITS_OF = PreparedSelect(
    sa.select(org_limits.c.org_id, org_limits.c.meter, org_limits.c.amount).where(
        org_limits.c.org_id.in_([sa.bindparam(name) for name in _SLOT_NAMES])
    )
)
_PERIOD_SUMS = PreparedSelect(
    sa.select(
        usage_subtree_daily.c.org_id,
        usage_subtree_daily.c.meter,
        sa.func.sum(usage_subtree_daily.c.quantity).label("consumed"),
    )
    .where(
        usage_subtree_daily.c.org_id.in_([sa.bindparam(name) for name in _SLOT_NAMES]),
        usage_subtree_daily.c.day >= sa.bindparam("start"),
        usage_subtree_daily.c.day < sa.bindparam("end"),
    )
    .group_by(usage_subtree_daily.c.org_id, usage_subtree_daily.c.meter)
)


async def _by_slots(
    conn: Reader, prepared: PreparedSelect, ids: list[int], **params: Any
) -> list[Any]:
    rows: list[Any] = []
    for at in range(0, len(ids), UTILIZATION_SLOTS):
        part = ids[at : at + UTILIZATION_SLOTS]
        padded = part + [_NO_ORG] * (UTILIZATION_SLOTS - len(part))
        slots = dict(zip(_SLOT_NAMES, padded, strict=True))
        rows += await all_rows(conn, prepared, {**slots, **params})
    return rows


async def utilization(
    conn: Reader, principal: Principal, org_ref: str, children: list[Any]
) -> dict[int, dict[str, Any]]:
    """Per child of ``org_ref`` among ``children`` (org rows) that has a limit: the meter it
    has used the most of this period, as a share of that limit (the numbers of ``report``'s
    ``rollup="children"`` entry for that meter). Meters tie in name order."""
    org = await reach(conn, principal, org_ref, scope="usage:read")
    ids = [c.id for c in children if c.parent_id == org.id]
    if not ids:
        return {}
    limits = {(r.org_id, r.meter): int(r.amount) for r in await _by_slots(conn, _LIMITS_OF, ids)}
    limited = sorted({org_id for org_id, _ in limits})
    if not limited:
        return {}
    current = month_of(utcnow().astimezone(ZoneInfo(org.timezone)).date())
    consumed = {
        (r.org_id, r.meter): int(r.consumed)
        for r in await _by_slots(conn, _PERIOD_SUMS, limited, start=current.start, end=current.end)
    }
    out: dict[int, dict[str, Any]] = {}
    for (org_id, meter), limit in sorted(limits.items()):
        used = consumed.get((org_id, meter), 0)
        pct = _pct(used, limit)
        if pct is not None and (org_id not in out or pct > out[org_id]["utilization_pct"]):
            out[org_id] = {"meter": meter, "consumed": used, "limit": limit, "utilization_pct": pct}
    return out
