"""Usage alerts: percentage thresholds of an org's limit of a meter, and whether each has fired.

One row per (org, meter, threshold): an org's alert on a meter is the set of its rows, all of
one ``scope`` (``org``: the org's own consumption; ``subtree``: its subtree's roll-up). Each row
keeps its firing state: ``period`` (the consumption month it last fired in, ``YYYY-MM``) and
``armed`` (it may fire again in that period: a new allocation dropped utilization back below
it). A threshold fires when utilization reaches it and it is armed or last fired in an earlier
period; firing sets ``period`` and disarms it, in the transaction that wrote the usage.
"""

import sqlalchemy as sa

from orgplane.models.base import BigId, UTCDateTime, metadata

usage_alerts = sa.Table(
    "usage_alerts",
    metadata,
    sa.Column("org_id", BigId, sa.ForeignKey("orgs.id"), primary_key=True),
    sa.Column("meter", sa.String(64), sa.ForeignKey("meters.name"), primary_key=True),
    # A percentage of the org's limit of the meter, 1 to 1000.
    sa.Column("threshold", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("root_id", BigId, nullable=False),
    sa.Column("scope", sa.String(8), nullable=False),
    sa.Column("period", sa.String(7), nullable=True),
    sa.Column("armed", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("scope IN ('org', 'subtree')", name="scope_known"),
    sa.CheckConstraint("threshold >= 1 AND threshold <= 1000", name="threshold_range"),
)
