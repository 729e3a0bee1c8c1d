"""The SQL of usage alerts: an org's thresholds, their firing state, and the figures a check
compares them with (the counters of a period and the limit). The rules are ``service``'s."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from orgplane.db.engine import PreparedSelect, Reader, Tx
from orgplane.models import org_limits, orgs, usage_alerts, usage_daily, usage_subtree_daily

_STATE_COLUMNS = (
    usage_alerts.c.org_id,
    usage_alerts.c.meter,
    usage_alerts.c.threshold,
    usage_alerts.c.root_id,
    usage_alerts.c.scope,
    usage_alerts.c.period,
    usage_alerts.c.armed,
    usage_alerts.c.created_at,
    usage_alerts.c.updated_at,
)
_KEY_ORDER = (usage_alerts.c.org_id, usage_alerts.c.meter, usage_alerts.c.threshold)


async def of_org(conn: Reader, org_id: int, meter: str | None = None) -> list[Any]:
    """An org's thresholds (of one meter, or of all), by meter and threshold."""
    statement = sa.select(*_STATE_COLUMNS).where(usage_alerts.c.org_id == org_id)
    if meter is not None:
        statement = statement.where(usage_alerts.c.meter == meter)
    return list((await conn.execute(statement.order_by(*_KEY_ORDER))).all())


async def lock_of_org(tx: Tx, org_id: int, meter: str) -> list[Any]:
    """``of_org`` for one meter, its rows locked (PostgreSQL) for a change of the alert."""
    statement = (
        sa.select(*_STATE_COLUMNS)
        .where(usage_alerts.c.org_id == org_id, usage_alerts.c.meter == meter)
        .order_by(*_KEY_ORDER)
    )
    if tx.is_postgres:
        statement = statement.with_for_update()
    return list((await tx.execute(statement)).all())


async def insert(
    tx: Tx, org: Any, meter: str, scope: str, thresholds: Iterable[int], now: datetime
) -> None:
    rows = [
        {
            "org_id": org.id,
            "meter": meter,
            "threshold": threshold,
            "root_id": org.root_id,
            "scope": scope,
            "period": None,
            "armed": True,
            "created_at": now,
            "updated_at": now,
        }
        for threshold in thresholds
    ]
    if rows:
        await tx.execute(sa.insert(usage_alerts), rows)


async def delete(tx: Tx, org_id: int, meter: str, thresholds: Iterable[int] | None = None) -> None:
    """Delete an org's thresholds of a meter (these, or all of them)."""
    statement = sa.delete(usage_alerts).where(
        usage_alerts.c.org_id == org_id, usage_alerts.c.meter == meter
    )
    if thresholds is not None:
        statement = statement.where(usage_alerts.c.threshold.in_(list(thresholds)))
    await tx.execute(statement)


async def reset(tx: Tx, org_id: int, meter: str, scope: str, now: datetime) -> None:
    """Give an org's thresholds of a meter a new scope, armed and never fired: what they
    measure changed."""
    await tx.execute(
        sa.update(usage_alerts)
        .where(usage_alerts.c.org_id == org_id, usage_alerts.c.meter == meter)
        .values(scope=scope, period=None, armed=True, updated_at=now)
    )


# Ingestion's one question when the batch's orgs have no alerts: the thresholds of the batch's
# orgs and of their ancestors (for subtree alerts), by the primary key's leading column. On
# PostgreSQL the rows found are locked, in key order: the check that follows reads the counters
# after the lock, so of two concurrent checks the second waits for the first to commit and sees
# its usage and what it fired. (A tenant's ingests queue on its audit chain head at commit all
# the same: locking the thresholds of ancestors they do not concern costs no concurrency.)
_CANDIDATES = (
    sa.select(*_STATE_COLUMNS, orgs.c.public_id)
    .select_from(usage_alerts.join(orgs, orgs.c.id == usage_alerts.c.org_id))
    .where(usage_alerts.c.org_id.in_(sa.bindparam("org_ids", expanding=True)))
    .order_by(*_KEY_ORDER)
)
# PostgreSQL runs it on the driver (ids as one array): on a batch of an org without alerts it
# is ingestion's only added statement, and SQLAlchemy's execution of it cost more CPU than the
# query itself.
_ANY_ORG = usage_alerts.c.org_id == sa.any_(
    sa.bindparam("org_ids", type_=postgresql.ARRAY(sa.BigInteger))
)
_CANDIDATES_PG = PreparedSelect(
    sa.select(*_STATE_COLUMNS, orgs.c.public_id)
    .select_from(usage_alerts.join(orgs, orgs.c.id == usage_alerts.c.org_id))
    .where(_ANY_ORG)
    .order_by(*_KEY_ORDER)
    .with_for_update(of=usage_alerts)
)


async def candidates(tx: Tx, org_ids: Iterable[int]) -> list[Any]:
    """The thresholds set on these orgs (locked on PostgreSQL), with each org's public id."""
    ids = sorted(set(org_ids))
    if tx.is_postgres:
        return await tx.fetch(_CANDIDATES_PG, {"org_ids": ids})
    return list((await tx.execute(_CANDIDATES, {"org_ids": ids})).all())


_ANY_ON = PreparedSelect(
    sa.select(usage_alerts.c.threshold)
    .where(
        usage_alerts.c.org_id == sa.bindparam("org_id"),
        usage_alerts.c.meter == sa.bindparam("meter"),
    )
    .limit(1)
)


async def any_on(tx: Tx, org_id: int, meter: str) -> bool:
    """Whether the org has an alert on the meter (one probe of the primary key)."""
    return bool(await tx.fetch(_ANY_ON, {"org_id": org_id, "meter": meter}))


def _used(counters: sa.Table) -> Any:
    return (
        sa.select(sa.func.coalesce(sa.func.sum(counters.c.quantity), 0))
        .where(
            counters.c.org_id == usage_alerts.c.org_id,
            counters.c.meter == usage_alerts.c.meter,
            counters.c.day >= sa.bindparam("start", type_=sa.Date),
            counters.c.day < sa.bindparam("end", type_=sa.Date),
        )
        .scalar_subquery()
    )


def _figures(orgs_filter: Any) -> sa.Select[Any]:
    return (
        sa.select(
            usage_alerts.c.org_id,
            usage_alerts.c.meter,
            org_limits.c.amount,
            sa.case(
                (usage_alerts.c.scope == "org", _used(usage_daily)),
                else_=_used(usage_subtree_daily),
            ).label("used"),
        )
        .select_from(
            usage_alerts.outerjoin(
                org_limits,
                sa.and_(
                    org_limits.c.org_id == usage_alerts.c.org_id,
                    org_limits.c.meter == usage_alerts.c.meter,
                ),
            )
        )
        .where(orgs_filter)
        .distinct()
    )


# What each (org, meter) with an alert used in a period, as its scope counts it, and its limit:
# one statement whatever the number of alerts (compiled once; on the driver on PostgreSQL).
_FIGURES = _figures(usage_alerts.c.org_id.in_(sa.bindparam("org_ids", expanding=True)))
_FIGURES_PG = PreparedSelect(_figures(_ANY_ORG))


async def figures(
    tx: Tx, org_ids: Iterable[int], start: date, end: date
) -> dict[tuple[int, str], tuple[int | None, int]]:
    """Per (org, meter) with an alert among these orgs: its limit (None without one) and its
    consumption over the days ``[start, end)`` (the org's own, or its subtree's, by the alert's
    scope), from the day counters as the consumption report reads them."""
    params = {"org_ids": sorted(set(org_ids)), "start": start, "end": end}
    if tx.is_postgres:
        rows: Iterable[Any] = await tx.fetch(_FIGURES_PG, params)
    else:
        rows = await tx.execute(_FIGURES, params)
    return {
        (r.org_id, r.meter): (None if r.amount is None else int(r.amount), int(r.used or 0))
        for r in rows
    }


async def fire(tx: Tx, state: Any, period: str, now: datetime) -> bool:
    """Mark a threshold fired in ``period``, unless it already did (a conditional update: of
    two checks racing, one fires)."""
    result = await tx.execute(
        sa.update(usage_alerts)
        .where(
            usage_alerts.c.org_id == state.org_id,
            usage_alerts.c.meter == state.meter,
            usage_alerts.c.threshold == state.threshold,
            sa.or_(
                usage_alerts.c.period.is_(None),
                usage_alerts.c.period < period,
                sa.and_(usage_alerts.c.period == period, usage_alerts.c.armed.is_(sa.true())),
            ),
        )
        .values(period=period, armed=False, updated_at=now)
    )
    return bool(result.rowcount)


async def rearm(tx: Tx, state: Any, now: datetime) -> None:
    await tx.execute(
        sa.update(usage_alerts)
        .where(
            usage_alerts.c.org_id == state.org_id,
            usage_alerts.c.meter == state.meter,
            usage_alerts.c.threshold == state.threshold,
        )
        .values(armed=True, updated_at=now)
    )
