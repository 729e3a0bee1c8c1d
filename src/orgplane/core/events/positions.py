"""The consumers' positions in the event log, and the log read forward from them.

Every consumer that reads the audit log as events (the webhooks' fan-out, the NATS sink) keeps,
per tenant, the ``seq`` of the last entry it has handled (``event_positions``, one row per
consumer and tenant) and reads the entries after it. Entries get their ``seq`` under the tenant's
chain-head lock, held until commit, so a committed entry's predecessors are committed before it:
reading ``seq > last_seq`` never skips one. A consumer takes its position row for the time it
handles a batch: on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so the processes that run the
same consumer handle different tenants side by side and never the same one twice at once.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from orgplane.db.engine import Reader, Tx
from orgplane.models import audit_chain_heads, audit_log, event_positions, orgs


async def chain_head(conn: Reader, root_id: int) -> int:
    """The tenant's last ``seq`` committed (0 for none)."""
    statement = sa.select(audit_chain_heads.c.seq).where(audit_chain_heads.c.root_id == root_id)
    return int((await conn.execute(statement)).scalar() or 0)


def _insert_ignoring_conflicts(tx: Tx) -> Any:
    return (
        postgresql.insert(event_positions) if tx.is_postgres else sqlite.insert(event_positions)
    ).on_conflict_do_nothing()


async def ensure_position(tx: Tx, consumer: str, root_id: int, last_seq: int) -> None:
    """The consumer's position in the tenant's chain, created at ``last_seq`` if it has none."""
    await tx.execute(
        _insert_ignoring_conflicts(tx).values(consumer=consumer, root_id=root_id, last_seq=last_seq)
    )


async def ensure_positions_at_start(tx: Tx, consumer: str, root_ids: list[int]) -> None:
    """Positions before the first entry for those of the tenants the consumer has none in (a
    consumer of every tenant, such as the NATS sink, starts each tenant at its first event)."""
    if root_ids:
        await tx.execute(
            _insert_ignoring_conflicts(tx),
            [{"consumer": consumer, "root_id": r, "last_seq": 0} for r in root_ids],
        )


async def tenants_behind(conn: Reader, consumer: str) -> list[int]:
    """The tenants whose chain has entries past the consumer's position (only tenants it has a
    position in)."""
    statement = (
        sa.select(event_positions.c.root_id)
        .select_from(
            event_positions.join(
                audit_chain_heads, audit_chain_heads.c.root_id == event_positions.c.root_id
            )
        )
        .where(
            event_positions.c.consumer == consumer,
            audit_chain_heads.c.seq > event_positions.c.last_seq,
        )
        .order_by(event_positions.c.root_id)
    )
    return [int(r) for r in (await conn.execute(statement)).scalars()]


async def tenants_behind_or_new(conn: Reader, consumer: str) -> tuple[list[int], list[int]]:
    """For a consumer of every tenant: the tenants with entries past its position, and those
    among them it has no position in yet."""
    position = event_positions.c.last_seq
    statement = (
        sa.select(audit_chain_heads.c.root_id, position)
        .select_from(
            audit_chain_heads.outerjoin(
                event_positions,
                sa.and_(
                    event_positions.c.root_id == audit_chain_heads.c.root_id,
                    event_positions.c.consumer == consumer,
                ),
            )
        )
        .where(audit_chain_heads.c.seq > sa.func.coalesce(position, 0))
        .order_by(audit_chain_heads.c.root_id)
    )
    rows = (await conn.execute(statement)).all()
    return [int(r.root_id) for r in rows], [int(r.root_id) for r in rows if r.last_seq is None]


async def take_position(tx: Tx, consumer: str, root_id: int) -> int | None:
    """The consumer's position in the tenant's chain, locked until commit; None when it has
    none, or (PostgreSQL) when another transaction holds it: that process is handling the tenant
    now."""
    statement = sa.select(event_positions.c.last_seq).where(
        event_positions.c.consumer == consumer, event_positions.c.root_id == root_id
    )
    if tx.is_postgres:
        statement = statement.with_for_update(skip_locked=True)
    value = (await tx.execute(statement)).scalar()
    return None if value is None else int(value)


async def position(conn: Reader, consumer: str, root_id: int) -> int | None:
    """The consumer's position in the tenant's chain, unlocked (None: it has none)."""
    statement = sa.select(event_positions.c.last_seq).where(
        event_positions.c.consumer == consumer, event_positions.c.root_id == root_id
    )
    value = (await conn.execute(statement)).scalar()
    return None if value is None else int(value)


async def move_position(tx: Tx, consumer: str, root_id: int, last_seq: int) -> None:
    """The position moved forward to ``last_seq`` (never back: a slower process that handled
    the same entries leaves it where it is)."""
    await tx.execute(
        sa.update(event_positions)
        .where(
            event_positions.c.consumer == consumer,
            event_positions.c.root_id == root_id,
            event_positions.c.last_seq < last_seq,
        )
        .values(last_seq=last_seq)
    )


async def entries_after(conn: Reader, root_id: int, last_seq: int, limit: int) -> list[Any]:
    """The tenant's entries after ``last_seq``, in order, each with its org's path and public
    id: what ``core.events.payload`` renders and the webhooks' fan-out matches."""
    statement = (
        sa.select(
            *audit_log.c,
            orgs.c.path.label("org_path"),
            orgs.c.public_id.label("org_public_id"),
        )
        .select_from(audit_log.join(orgs, orgs.c.id == audit_log.c.org_id))
        .where(audit_log.c.root_id == root_id, audit_log.c.seq > last_seq)
        .order_by(audit_log.c.seq)
        .limit(limit)
    )
    return list((await conn.execute(statement)).all())


async def org_public_id(conn: Reader, org_pk: int) -> str | None:
    """The public id of the org ``org_pk`` (a tenant's root, for a consumer naming tenants)."""
    statement = sa.select(orgs.c.public_id).where(orgs.c.id == org_pk)
    value = (await conn.execute(statement)).scalar()
    return None if value is None else str(value)
