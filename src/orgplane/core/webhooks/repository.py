"""The webhooks' statements: endpoints, deliveries and attempts (the consumers' positions are
in ``core.events.positions``). The rules that decide them are in ``service``, ``dispatch``
and ``delivery``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from orgplane.db.engine import PreparedSelect, Reader, Tx, all_rows, reads_postgres
from orgplane.models import (
    audit_log,
    orgs,
    webhook_attempts,
    webhook_deliveries,
    webhooks,
)

WEBHOOK_COLUMNS = (
    *webhooks.c,
    orgs.c.public_id.label("org_public_id"),
    orgs.c.path.label("org_path"),
)


def _with_org() -> Any:
    return sa.select(*WEBHOOK_COLUMNS).select_from(
        webhooks.join(orgs, orgs.c.id == webhooks.c.org_id)
    )


async def insert(tx: Tx, values: dict[str, Any]) -> Any:
    webhook_pk = (
        await tx.execute(sa.insert(webhooks).values(values).returning(webhooks.c.id))
    ).scalar_one()
    return await by_pk(tx.conn, webhook_pk)


async def by_pk(conn: Reader, webhook_pk: int) -> Any:
    return (await conn.execute(_with_org().where(webhooks.c.id == webhook_pk))).first()


# A batch's reads on PostgreSQL take their keys as arrays: one statement text whatever their
# number, prepared once by the driver (an IN list of n keys is a new statement for each n).
_BIGINTS = postgresql.ARRAY(sa.BigInteger)
_WEBHOOKS_PG = PreparedSelect(
    _with_org().where(webhooks.c.id == sa.any_(sa.bindparam("ids", type_=_BIGINTS)))
)


async def by_pks(conn: Reader, webhook_pks: set[int]) -> dict[int, Any]:
    """These webhooks, by primary key (the ones gone are absent)."""
    if not webhook_pks:
        return {}
    if reads_postgres(conn):
        rows = await all_rows(conn, _WEBHOOKS_PG, {"ids": sorted(webhook_pks)})
    else:
        statement = _with_org().where(webhooks.c.id.in_(sorted(webhook_pks)))
        rows = list((await conn.execute(statement)).all())
    return {row.id: row for row in rows}


async def find(conn: Reader, org_id: int, public_id: str, *, lock: bool = False) -> Any:
    """The webhook ``public_id`` of the org ``org_id``, or None; locked for a change."""
    statement = _with_org().where(webhooks.c.public_id == public_id, webhooks.c.org_id == org_id)
    if lock:
        statement = statement.with_for_update(of=webhooks)
    return (await conn.execute(statement)).first()


async def page(conn: Reader, org_id: int, *, after: int | None, limit: int) -> list[Any]:
    """Up to ``limit`` + 1 webhooks of the org after the webhook ``after``, oldest first."""
    statement = _with_org().where(webhooks.c.org_id == org_id)
    if after is not None:
        statement = statement.where(webhooks.c.id > after)
    return list((await conn.execute(statement.order_by(webhooks.c.id).limit(limit + 1))).all())


async def update(tx: Tx, webhook_pk: int, values: dict[str, Any]) -> Any:
    await tx.execute(sa.update(webhooks).where(webhooks.c.id == webhook_pk).values(values))
    return await by_pk(tx.conn, webhook_pk)


async def delete(tx: Tx, webhook_pk: int) -> None:
    # Explicitly, children first: the cascade of the foreign keys is not relied on.
    await tx.execute(sa.delete(webhook_attempts).where(webhook_attempts.c.webhook_id == webhook_pk))
    await tx.execute(
        sa.delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_pk)
    )
    await tx.execute(sa.delete(webhooks).where(webhooks.c.id == webhook_pk))


async def live_webhooks_of_tenant(conn: Reader, root_id: int) -> list[Any]:
    """The tenant's enabled webhooks of live orgs, with their org's path."""
    statement = _with_org().where(
        webhooks.c.root_id == root_id, webhooks.c.enabled.is_(True), orgs.c.deleted_at.is_(None)
    )
    return list((await conn.execute(statement)).all())


async def queue(tx: Tx, rows: list[dict[str, Any]]) -> None:
    await tx.insert_many(webhook_deliveries, rows)


# What the fan-out matches and queues of an entry (not its documents: the delivery reads them).
_FAN_OUT_ENTRIES = PreparedSelect(
    sa.select(
        audit_log.c.seq,
        audit_log.c.org_id,
        audit_log.c.action,
        audit_log.c.hash,
        audit_log.c.at,
        orgs.c.path.label("org_path"),
    )
    .select_from(audit_log.join(orgs, orgs.c.id == audit_log.c.org_id))
    .where(
        audit_log.c.root_id == sa.bindparam("root_id"),
        audit_log.c.seq > sa.bindparam("last_seq"),
    )
    .order_by(audit_log.c.seq)
    .limit(sa.bindparam("limit"))
)


async def fan_out_entries(tx: Tx, root_id: int, last_seq: int, limit: int) -> list[Any]:
    """The tenant's entries after ``last_seq``, in order, with what the fan-out needs."""
    return await tx.fetch(
        _FAN_OUT_ENTRIES, {"root_id": root_id, "last_seq": last_seq, "limit": limit}
    )


async def any_due(conn: Reader, now: datetime) -> bool:
    statement = (
        sa.select(webhook_deliveries.c.id)
        .where(
            webhook_deliveries.c.status == "pending", webhook_deliveries.c.next_attempt_at <= now
        )
        .limit(1)
    )
    return (await conn.execute(statement)).first() is not None


async def claim(tx: Tx, now: datetime, lease_until: datetime, limit: int) -> list[Any]:
    """Lease up to ``limit`` due deliveries of enabled endpoints: each is due again when the
    lease ends, unless its worker records the attempt first. On PostgreSQL rows another worker
    is claiming are skipped (``SKIP LOCKED``); SQLite has one writer."""
    enabled = (
        sa.select(webhooks.c.id)
        .where(webhooks.c.id == webhook_deliveries.c.webhook_id, webhooks.c.enabled.is_(True))
        .exists()
    )
    due = (
        sa.select(webhook_deliveries.c.id)
        .where(
            webhook_deliveries.c.status == "pending",
            webhook_deliveries.c.next_attempt_at <= now,
            enabled,
        )
        .order_by(webhook_deliveries.c.next_attempt_at)
        .limit(limit)
    )
    if tx.is_postgres:
        due = due.with_for_update(skip_locked=True)
    statement = (
        sa.update(webhook_deliveries)
        .where(webhook_deliveries.c.id.in_(due.scalar_subquery()))
        .values(
            attempts=webhook_deliveries.c.attempts + 1,
            leased_until=lease_until,
            next_attempt_at=lease_until,
        )
        .returning(
            webhook_deliveries.c.id,
            webhook_deliveries.c.webhook_id,
            webhook_deliveries.c.root_id,
            webhook_deliveries.c.seq,
            webhook_deliveries.c.event_id,
            webhook_deliveries.c.attempts,
        )
    )
    return list((await tx.execute(statement)).all())


def _entries_pg() -> PreparedSelect:
    places = (
        sa.func.unnest(sa.bindparam("roots", type_=_BIGINTS), sa.bindparam("seqs", type_=_BIGINTS))
        .table_valued("root_id", "seq")
        .render_derived(name="places")
    )
    return PreparedSelect(
        sa.select(*audit_log.c, orgs.c.public_id.label("org_public_id")).select_from(
            places.join(
                audit_log,
                sa.and_(audit_log.c.root_id == places.c.root_id, audit_log.c.seq == places.c.seq),
            ).join(orgs, orgs.c.id == audit_log.c.org_id)
        )
    )


_ENTRIES_PG = _entries_pg()


async def entries(conn: Reader, keys: set[tuple[int, int]]) -> dict[tuple[int, int], Any]:
    """The audit entries at these (tenant, ``seq``) places, with their org's public id."""
    if not keys:
        return {}
    ordered = sorted(keys)
    if reads_postgres(conn):
        params = {"roots": [k[0] for k in ordered], "seqs": [k[1] for k in ordered]}
        rows = await all_rows(conn, _ENTRIES_PG, params)
    else:
        statement = (
            sa.select(*audit_log.c, orgs.c.public_id.label("org_public_id"))
            .select_from(audit_log.join(orgs, orgs.c.id == audit_log.c.org_id))
            .where(sa.tuple_(audit_log.c.root_id, audit_log.c.seq).in_(ordered))
        )
        rows = list((await conn.execute(statement)).all())
    return {(row.root_id, row.seq): row for row in rows}


async def record_attempt(tx: Tx, values: dict[str, Any]) -> None:
    await tx.execute(sa.insert(webhook_attempts).values(values))


async def record_attempts(tx: Tx, rows: list[dict[str, Any]]) -> None:
    await tx.insert_many(webhook_attempts, rows)


_SETTLE_MANY = (
    sa.update(webhook_deliveries)
    .where(
        webhook_deliveries.c.id == sa.bindparam("delivery_pk"),
        webhook_deliveries.c.attempts == sa.bindparam("attempt"),
        webhook_deliveries.c.status == "pending",
    )
    .values(
        status=sa.bindparam("new_status"),
        delivered_at=sa.bindparam("new_delivered_at"),
        # None keeps the time it has (a delivery settled for good is never due again).
        next_attempt_at=sa.func.coalesce(
            sa.bindparam("new_next_attempt_at", type_=webhook_deliveries.c.next_attempt_at.type),
            webhook_deliveries.c.next_attempt_at,
        ),
        leased_until=None,
    )
)


# The same for PostgreSQL in one statement whatever the number of deliveries.
_SETTLE_MANY_PG = """
UPDATE webhook_deliveries AS d
SET status = s.status,
    delivered_at = s.delivered_at,
    next_attempt_at = coalesce(s.next_attempt_at, d.next_attempt_at),
    leased_until = NULL
FROM unnest($1::bigint[], $2::integer[], $3::varchar[], $4::timestamptz[], $5::timestamptz[])
    AS s(id, attempt, status, delivered_at, next_attempt_at)
WHERE d.id = s.id AND d.attempts = s.attempt AND d.status = 'pending'
"""


async def settle_many(tx: Tx, states: list[dict[str, Any]]) -> None:
    """``settle`` for many deliveries: each of ``states`` names ``delivery_pk``, ``attempt``,
    ``new_status``, ``new_delivered_at`` and ``new_next_attempt_at`` (None: unchanged)."""
    if not states:
        return
    states = sorted(states, key=lambda state: state["delivery_pk"])
    if not tx.is_postgres:
        await tx.execute(_SETTLE_MANY, states)
        return
    keys = ("delivery_pk", "attempt", "new_status", "new_delivered_at", "new_next_attempt_at")
    await tx.driver_execute(_SETTLE_MANY_PG, *([state[k] for state in states] for k in keys))


async def settle(tx: Tx, delivery_pk: int, attempt: int, values: dict[str, Any]) -> bool:
    """Set a delivery's next state, if it is still the lease of this attempt (a worker whose
    lease ran out, and whose delivery was claimed again, changes nothing)."""
    result = await tx.execute(
        sa.update(webhook_deliveries)
        .where(
            webhook_deliveries.c.id == delivery_pk,
            webhook_deliveries.c.attempts == attempt,
            webhook_deliveries.c.status == "pending",
        )
        .values(values)
    )
    return bool(result.rowcount)


async def clear_failing(tx: Tx, webhook_pk: int) -> None:
    await tx.execute(
        sa.update(webhooks)
        .where(webhooks.c.id == webhook_pk, webhooks.c.failing_since.is_not(None))
        .values(failing_since=None)
    )


async def still_there(tx: Tx, webhook_pk: int) -> bool:
    """Whether the webhook exists, kept so until commit (``keep_existing``)."""
    return webhook_pk in await keep_existing(tx, {webhook_pk})


async def keep_existing(tx: Tx, webhook_pks: set[int]) -> set[int]:
    """Which of these webhooks exist, kept so until commit: on PostgreSQL ``FOR KEY SHARE``, in
    key order, which a deletion waits for (and which waits for a deletion under way) but other
    deliveries' records and changes to a webhook's other columns do not; SQLite has one
    writer."""
    if not webhook_pks:
        return set()
    statement = (
        sa.select(webhooks.c.id)
        .where(webhooks.c.id.in_(sorted(webhook_pks)))
        .order_by(webhooks.c.id)
    )
    if tx.is_postgres:
        statement = statement.with_for_update(read=True, key_share=True)
    return set((await tx.execute(statement)).scalars().all())


async def failing(conn: Reader, webhook_pks: set[int]) -> set[int]:
    """Which of these webhooks have a failing streak."""
    if not webhook_pks:
        return set()
    statement = sa.select(webhooks.c.id).where(
        webhooks.c.id.in_(sorted(webhook_pks)), webhooks.c.failing_since.is_not(None)
    )
    return set((await conn.execute(statement)).scalars().all())


async def lock_webhook(tx: Tx, webhook_pk: int) -> Any:
    """The webhook, locked for a change of its columns other than the key (on PostgreSQL ``FOR NO
    KEY UPDATE``: it does not wait for the ``FOR KEY SHARE`` of ``keep_existing``)."""
    statement = sa.select(webhooks).where(webhooks.c.id == webhook_pk)
    if tx.is_postgres:
        statement = statement.with_for_update(key_share=True)
    return (await tx.execute(statement)).first()


async def attempts_page(
    conn: Reader, webhook_pk: int, *, before: int | None, limit: int
) -> list[Any]:
    """Up to ``limit`` + 1 attempts of the webhook before the attempt ``before``, newest first."""
    statement = sa.select(webhook_attempts).where(webhook_attempts.c.webhook_id == webhook_pk)
    if before is not None:
        statement = statement.where(webhook_attempts.c.id < before)
    statement = statement.order_by(webhook_attempts.c.id.desc()).limit(limit + 1)
    return list((await conn.execute(statement)).all())


async def last_attempts(conn: Reader, webhook_pks: list[int]) -> dict[int, Any]:
    """Each of these webhooks' latest attempt (webhooks never sent to are absent)."""
    if not webhook_pks:
        return {}
    latest = (
        sa.select(sa.func.max(webhook_attempts.c.id))
        .where(webhook_attempts.c.webhook_id.in_(webhook_pks))
        .group_by(webhook_attempts.c.webhook_id)
    )
    statement = sa.select(webhook_attempts).where(webhook_attempts.c.id.in_(latest))
    return {row.webhook_id: row for row in (await conn.execute(statement)).all()}


async def queued_events(
    conn: Reader,
    webhook_pk: int,
    *,
    event_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
) -> list[Any]:
    """The events queued for the webhook before (one, or those of a time range), each once."""
    statement = sa.select(
        webhook_deliveries.c.seq,
        webhook_deliveries.c.event_id,
        sa.func.min(webhook_deliveries.c.event_at).label("event_at"),
    ).where(webhook_deliveries.c.webhook_id == webhook_pk)
    if event_id is not None:
        statement = statement.where(webhook_deliveries.c.event_id == event_id)
    if since is not None:
        statement = statement.where(webhook_deliveries.c.event_at >= since)
    if until is not None:
        statement = statement.where(webhook_deliveries.c.event_at < until)
    statement = (
        statement.group_by(webhook_deliveries.c.seq, webhook_deliveries.c.event_id)
        .order_by(webhook_deliveries.c.seq)
        .limit(limit)
    )
    return list((await conn.execute(statement)).all())
