"""Meters, the limits a parent gives its children, and per-day usage counters.

Counters are kept per day (in the org's timezone) so that a month, a week and the change between
them are sums over at most a few dozen rows; raw events are never scanned for a report.
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
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.CheckConstraint("amount >= 0", name="amount_nonnegative"),
)

usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("org_id", BigId, sa.ForeignKey("orgs.id"), primary_key=True),
    sa.Column("meter", sa.String(64), sa.ForeignKey("meters.name"), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("quantity", sa.BigInteger, nullable=False),
)
