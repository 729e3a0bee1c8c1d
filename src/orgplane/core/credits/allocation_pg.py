"""An allocation's statements on PostgreSQL, run on the driver: few round trips under the lock.

Allocators on one parent queue on the parent's limit row (and every audited write of a tenant on
its audit chain head), so what counts is how long the holder keeps them: here one statement
locks the limit rows and then the chain head, one statement makes every write (both balances,
the ledger row, the audit entry and the head), and the commit follows. The rules themselves are
``service``'s; this module only holds the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from orgplane.core.audit import service as audit
from orgplane.db.engine import PreparedSelect, Tx
from orgplane.models import meters, orgs

# The meter, once per org: the tenant root FOR KEY SHARE (the tree lock of allocations,
# ``lock_tree``), and the parent's and the child's rows and the meter's FOR KEY SHARE too, in
# the tree's order. Those are the keys the writes' foreign key checks lock: taken now, before
# any limit row or the chain head, they cannot make a write wait behind a transaction that
# holds one of them FOR UPDATE (a rename) and waits for the chain head this one holds.
_METER_AND_KEYS = PreparedSelect(
    sa.select(meters)
    .select_from(
        meters.join(
            orgs,
            orgs.c.id.in_(
                [sa.bindparam("root_id"), sa.bindparam("parent_id"), sa.bindparam("child_id")]
            ),
        )
    )
    .where(meters.c.name == sa.bindparam("meter"))
    .order_by(orgs.c.depth)
    .with_for_update(read=True, key_share=True)
)

# A parent and its child named by public id or integer key, read (with the meter) in one
# statement run after the tree lock, so that what it reads holds until commit; their rows and
# the meter's FOR KEY SHARE, in the tree's order, as ``_METER_AND_KEYS`` takes them.
_parent_org = orgs.alias("parent_org")
_meter = (
    sa.select(meters.c.name, meters.c.unit, meters.c.step, meters.c.deployment_charge_pct)
    .where(meters.c.name == sa.bindparam("meter"))
    .with_for_update(read=True, key_share=True)
    .cte("pair_meter")
    .prefix_with("MATERIALIZED")
)
_PAIR = PreparedSelect(
    sa.select(
        *orgs.c,
        _parent_org.c.public_id.label("parent_public_id"),
        _meter.c.name.label("meter_name"),
        _meter.c.unit.label("meter_unit"),
        _meter.c.step.label("meter_step"),
        _meter.c.deployment_charge_pct.label("meter_deployment_charge_pct"),
    )
    .select_from(
        orgs.outerjoin(_parent_org, _parent_org.c.id == orgs.c.parent_id).outerjoin(
            _meter, sa.true()
        )
    )
    .where(
        sa.or_(
            orgs.c.public_id.in_([sa.bindparam("parent_ref"), sa.bindparam("child_ref")]),
            orgs.c.id.in_([sa.bindparam("parent_key"), sa.bindparam("child_key")]),
        )
    )
    .order_by(orgs.c.depth, orgs.c.id)
    .with_for_update(of=orgs, read=True, key_share=True)
)


@dataclass(frozen=True)
class Meter:
    name: str
    unit: str
    step: int
    deployment_charge_pct: Any


@dataclass(frozen=True)
class Pair:
    """The orgs found by each reference given (None: not found), and the meter (None)."""

    parent: Any
    child: Any
    meter: Meter | None


async def read_pair(tx: Tx, parent_ref: str | int, child_ref: str | int, meter: str) -> Pair:
    """The parent and the child as ``reach`` reads them, and the meter, in one round trip; the
    caller holds the tree lock, and decides reach on the rows (``access.service.reached``)."""

    def split(ref: str | int) -> tuple[str | None, int | None]:
        return (None, ref) if isinstance(ref, int) else (ref, None)

    (parent_public, parent_key), (child_public, child_key) = split(parent_ref), split(child_ref)
    rows = await tx.fetch(
        _PAIR,
        {
            "meter": meter,
            "parent_ref": parent_public,
            "child_ref": child_public,
            "parent_key": parent_key,
            "child_key": child_key,
        },
    )

    def named(ref: str | int) -> Any:
        field = "id" if isinstance(ref, int) else "public_id"
        return next((row for row in rows if getattr(row, field) == ref), None)

    found = next((row for row in rows if row.meter_name is not None), None)
    meter_row = (
        Meter(
            found.meter_name,
            found.meter_unit,
            int(found.meter_step),
            found.meter_deployment_charge_pct,
        )
        if found is not None
        else None
    )
    return Pair(named(parent_ref), named(child_ref), meter_row)


_LOCK = PreparedSelect(
    sa.text(
        # The parent's row (an ancestor) before the child's, as ``lock_balances`` does; then,
        # when at least ``pools_before_head`` rows were found, the chain head, which depends on
        # ``pools`` so that it is locked after them: org rows first, then the head, the order
        # every audited write keeps.
        """
        WITH pools AS MATERIALIZED (
            SELECT org_id, amount, allocated, charge FROM org_limits
            WHERE org_id IN (:parent_id, :child_id) AND meter = :meter
            ORDER BY org_id = :child_id
            FOR UPDATE
        ), head AS MATERIALIZED (
            SELECT seq, last_hash FROM audit_chain_heads
            WHERE root_id = :root_id AND (SELECT count(*) FROM pools) >= :pools_before_head
            FOR UPDATE
        )
        SELECT org_id, amount, allocated, charge,
               CAST(NULL AS BIGINT) AS seq, CAST(NULL AS VARCHAR) AS last_hash
        FROM pools
        UNION ALL
        SELECT NULL, NULL, NULL, NULL, seq, last_hash FROM head
        """
    ).columns(
        sa.column("org_id", sa.BigInteger),
        sa.column("amount", sa.BigInteger),
        sa.column("allocated", sa.BigInteger),
        sa.column("charge", sa.BigInteger),
        sa.column("seq", sa.BigInteger),
        sa.column("last_hash", sa.String),
    )
)

LEDGER_COLUMNS = (
    "root_id",
    "at",
    "meter",
    "kind",
    "org_id",
    "parent_id",
    "delta",
    "charge_delta",
    "org_amount",
    "org_allocated",
    "parent_amount",
    "parent_allocated",
    "actor",
    "actor_key_id",
    "request_id",
    "idempotency_key",
)
AUDIT_COLUMNS = audit.COLUMNS


def _columns(names: tuple[str, ...]) -> str:
    return ", ".join(names)


def _values(prefix: str, names: tuple[str, ...]) -> str:
    return ", ".join(f":{prefix}{name}" for name in names)


def _write_statement(*, audit: bool) -> PreparedSelect:
    """The write statement; with ``audit``, the chained entry and the new chain head too."""
    audit_ctes = (
        f"""
        , chain_head AS (
            UPDATE audit_chain_heads SET seq = :audit_seq, last_hash = :audit_hash
            WHERE root_id = :root_id AND (SELECT ok FROM checked)
        ), audit_entry AS (
            INSERT INTO audit_log ({_columns(AUDIT_COLUMNS)})
            SELECT {_values("audit_", AUDIT_COLUMNS)} FROM checked WHERE ok
        )"""
        if audit
        else ""
    )
    return PreparedSelect(
        sa.text(
            # Own consumption this period is read here, in a snapshot taken after the locks (the
            # hard-meter ingestion that adds to it holds the same limit rows), and each write
            # happens only if it stays within what the rules allow (``ok``); otherwise nothing is
            # written and the caller refuses with the figures returned.
            f"""
        WITH used AS (
            SELECT
                (SELECT CAST(coalesce(sum(quantity), 0) AS BIGINT) FROM usage_daily
                 WHERE org_id = :parent_id AND meter = :meter AND day >= :parent_since)
                    AS parent_used,
                (SELECT CAST(coalesce(sum(quantity), 0) AS BIGINT) FROM usage_daily
                 WHERE org_id = :child_id AND meter = :meter AND day >= :child_since)
                    AS child_used
        ), checked AS (
            SELECT parent_used, child_used,
                   (CAST(:parent_may_use AS BIGINT) IS NULL OR parent_used <= :parent_may_use)
                   AND (CAST(:child_may_use AS BIGINT) IS NULL OR child_used <= :child_may_use)
                   AS ok
            FROM used
        ), parent_pool AS (
            UPDATE org_limits SET allocated = :parent_allocated, updated_at = :now
            WHERE org_id = :parent_id AND meter = :meter AND (SELECT ok FROM checked)
        ), child_limit AS (
            INSERT INTO org_limits (org_id, meter, root_id, amount, allocated, charge, updated_at)
            SELECT :child_id, :meter, :root_id, :child_amount, :child_allocated, :child_charge,
                   :now
            FROM checked WHERE ok
            ON CONFLICT (org_id, meter) DO UPDATE
            SET amount = excluded.amount, charge = excluded.charge,
                updated_at = excluded.updated_at
        ), ledger_row AS (
            INSERT INTO ledger ({_columns(LEDGER_COLUMNS)})
            SELECT {_values("ledger_", LEDGER_COLUMNS)} FROM checked WHERE ok
        ){audit_ctes}
        SELECT ok, parent_used, child_used FROM checked
        """
        ).columns(
            sa.column("ok", sa.Boolean),
            sa.column("parent_used", sa.BigInteger),
            sa.column("child_used", sa.BigInteger),
        )
    )


_WRITE = _write_statement(audit=True)
_WRITE_UNAUDITED = _write_statement(audit=False)


@dataclass(frozen=True)
class Locked:
    """The limit rows of the parent and the child (by org id) and, when it was asked for, the
    audit chain head."""

    pools: dict[int, Any]
    seq: int | None
    last_hash: str | None


async def meter_and_key_locks(tx: Tx, meter: str, parent: Any, child: Any) -> Any:
    """The meter's row (None if there is none), with the key locks of ``_METER_AND_KEYS``."""
    params = {"meter": meter, "root_id": parent.root_id, "parent_id": parent.id}
    rows = await tx.fetch(_METER_AND_KEYS, {**params, "child_id": child.id})
    return rows[0] if rows else None


# ``pools_before_head`` above the number of limit rows there can be: the head is left alone.
_NO_HEAD = 3


async def lock(
    tx: Tx, root_id: int, parent_id: int, child_id: int, meter: str, *, head: bool = True
) -> Locked:
    """Lock the two limit rows (those that exist), then, with ``head``, the tenant's audit
    chain head (without it, the entry is chained at commit: ``audit.append_pending``)."""
    params = {"root_id": root_id, "parent_id": parent_id, "child_id": child_id, "meter": meter}
    rows = await tx.fetch(_LOCK, {**params, "pools_before_head": 2 if head else _NO_HEAD})
    pools = {row.org_id: row for row in rows if row.org_id is not None}
    if len(pools) < 2:
        # A row is missing from this statement's snapshot (and the head was left alone). The row
        # may have been inserted by a transaction that held the parent's lock we just waited
        # for: read again now that we hold it (or the child's row would be inserted a second
        # time), and this time take the head, with every limit row there is already locked.
        rows = await tx.fetch(_LOCK, {**params, "pools_before_head": 0 if head else _NO_HEAD})
        pools = {row.org_id: row for row in rows if row.org_id is not None}
    if not head:
        return Locked(pools, None, None)
    (found,) = [row for row in rows if row.seq is not None] or [None]
    if found is None:
        raise AssertionError(f"tenant {root_id} has no audit chain head")
    return Locked(pools, found.seq, found.last_hash)


@dataclass(frozen=True)
class Used:
    """What the write statement found: whether it wrote, and the consumption it checked."""

    ok: bool
    parent: int
    child: int


async def write(
    tx: Tx,
    *,
    root_id: int,
    meter: str,
    now: datetime,
    parent: Any,
    child: Any,
    since: tuple[date, date],
    may_use: tuple[int | None, int | None],
    ledger_row: dict[str, Any],
    audit_entry: dict[str, Any] | None,
) -> Used:
    """Every write of an allocation in one statement, made only if the consumption checks pass.

    ``parent`` and ``child`` are the balances after the change (``org_id``, ``amount``,
    ``allocated``, ``charge``); ``since`` the start of each one's period; ``may_use`` the most
    each may have consumed this period for the change to stand (None: no check);
    ``audit_entry`` is chained already (None: the caller queued it for the commit).
    """
    params = {
        "root_id": root_id,
        "meter": meter,
        "now": now,
        "parent_id": parent.org_id,
        "parent_allocated": parent.allocated,
        "child_id": child.org_id,
        "child_amount": child.amount,
        "child_allocated": child.allocated,
        "child_charge": child.charge,
        "parent_since": since[0],
        "child_since": since[1],
        "parent_may_use": may_use[0],
        "child_may_use": may_use[1],
        **{f"ledger_{name}": ledger_row[name] for name in LEDGER_COLUMNS},
    }
    if audit_entry is not None:
        params.update({f"audit_{name}": audit_entry[name] for name in AUDIT_COLUMNS})
        for name in ("audit_before", "audit_after"):
            # The driver takes JSONB as text (the codec SQLAlchemy installs on its connections).
            if params[name] is not None:
                params[name] = orjson.dumps(params[name]).decode()
    statement = _WRITE if audit_entry is not None else _WRITE_UNAUDITED
    row = (await tx.fetch(statement, params))[0]
    return Used(row.ok, row.parent_used, row.child_used)
