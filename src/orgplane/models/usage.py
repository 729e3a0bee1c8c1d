"""Meters, limits and their ledger, usage events and per-day usage counters.

For each org and meter, ``org_limits`` holds what the org was given (``amount``: by its parent,
or by the operator for a root), what it handed on (``allocated``: its children's amounts plus the
deployment charges on them) and the deployment charge its own allocation costs its parent
(``charge``). ``available = amount - allocated`` is never negative: a CHECK enforces it. Every
change to these numbers is a row of the append-only ``ledger``, from which they can be rebuilt.

Usage arrives as events (stored once per idempotency key) and is folded into per-day counters
(in the org's time zone), so a month, a week and the change between them are sums over at most
a few dozen rows; raw events are never scanned for a report.
"""

import sqlalchemy as sa

from orgplane.models.base import BigId, UTCDateTime, metadata

meters = sa.Table(
    "meters",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("unit", sa.String(32), nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False, server_default="1"),
    sa.Column("period", sa.String(16), nullable=False, server_default="month"),
    sa.Column("enforcement", sa.String(8), nullable=False, server_default="soft"),
    sa.Column("deployment_charge_pct", sa.Numeric(6, 2), nullable=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("step > 0", name="step_positive"),
    sa.CheckConstraint("enforcement IN ('soft', 'hard')", name="enforcement_known"),
)

org_limits = sa.Table(
    "org_limits",
    metadata,
    sa.Column("org_id", BigId, sa.ForeignKey("orgs.id"), primary_key=True),
    sa.Column("meter", sa.String(64), sa.ForeignKey("meters.name"), primary_key=True),
    sa.Column("root_id", BigId, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("allocated", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("charge", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("amount >= 0", name="amount_nonnegative"),
    sa.CheckConstraint("allocated >= 0", name="allocated_nonnegative"),
    sa.CheckConstraint("charge >= 0", name="charge_nonnegative"),
    sa.CheckConstraint("amount >= allocated", name="available_nonnegative"),
)

ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("root_id", BigId, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("meter", sa.String(64), sa.ForeignKey("meters.name"), nullable=False),
    # limit.set (operator, roots), allocation (parent to child), release (unused allocation back
    # to the parent on delete/deactivate), move.out / move.in (an allocation follows its org).
    sa.Column("kind", sa.String(16), nullable=False),
    # The org whose amount changed, and the parent whose pool paid for it (None for limit.set).
    sa.Column("org_id", BigId, nullable=False),
    sa.Column("parent_id", BigId, nullable=True),
    sa.Column("delta", sa.BigInteger, nullable=False),
    sa.Column("charge_delta", sa.BigInteger, nullable=False, server_default="0"),
    # Balances after the change.
    sa.Column("org_amount", sa.BigInteger, nullable=False),
    sa.Column("org_allocated", sa.BigInteger, nullable=False),
    sa.Column("parent_amount", sa.BigInteger, nullable=True),
    sa.Column("parent_allocated", sa.BigInteger, nullable=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("actor_key_id", sa.String(32), nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    sa.Index("ix_ledger_org_id_id", "org_id", "id"),
    sa.Index("ix_ledger_parent_id_id", "parent_id", "id"),
    sa.Index("ix_ledger_root_id_id", "root_id", "id"),
)

# An append-only log written at tens of thousands of rows a second. Its org and meter are
# checked by ingestion in the same transaction (and orgs are never hard-deleted), so it carries
# no foreign keys: they measured half the cost of each batch's insert on PostgreSQL.
usage_events = sa.Table(
    "usage_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("root_id", BigId, nullable=False),
    sa.Column("idempotency_key", sa.String(255), nullable=False),
    sa.Column("org_id", BigId, nullable=False),
    sa.Column("meter", sa.String(64), nullable=False),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    # The day in the org's time zone, as counted in usage_daily.
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    # Idempotency keys are unique within a tenant tree.
    sa.UniqueConstraint("root_id", "idempotency_key"),
    sa.CheckConstraint("quantity >= 0", name="quantity_nonnegative"),
)

usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("org_id", BigId, sa.ForeignKey("orgs.id"), primary_key=True),
    sa.Column("meter", sa.String(64), sa.ForeignKey("meters.name"), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("root_id", BigId, nullable=False),
    sa.Column("quantity", sa.BigInteger, nullable=False),
)

# Per-subtree day counters: one row per (ancestor org, meter, day) holding the sum of usage_daily
# over the ancestor's whole subtree (itself included; soft-deleted descendants still count), so a
# subtree's month is a sum over its own few dozen rows instead of a range join over every
# descendant. Ingestion folds each batch into the org and every ancestor in the same upsert-heavy
# transaction, and a move takes the moved subtree's rows from its old ancestors to its new ones.
# Like usage_events it is written on the hot ingestion path (one row per ancestor per batch day)
# and its org and meter are checked there in the same transaction, so it carries no foreign keys.
usage_subtree_daily = sa.Table(
    "usage_subtree_daily",
    metadata,
    sa.Column("org_id", BigId, primary_key=True),
    sa.Column("meter", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("root_id", BigId, nullable=False),
    sa.Column("quantity", sa.BigInteger, nullable=False),
)
