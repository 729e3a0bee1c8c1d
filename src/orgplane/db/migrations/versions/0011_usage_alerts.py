"""usage_alerts: percentage thresholds of an org's limit, and each one's firing state

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

One row per (org, meter, threshold), with the alert's scope (the org's own consumption or its
subtree's) and the threshold's state: the period it last fired in and whether it is armed
again (models/alerts.py). Ingestion looks an org's alerts up by the primary key's leading
``org_id``, so an org without alerts costs one index probe.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from orgplane.models.base import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "usage_alerts",
        sa.Column("org_id", _ID, nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("threshold", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("root_id", _ID, nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=True),
        sa.Column("armed", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("scope IN ('org', 'subtree')", name=op.f("ck_usage_alerts_scope_known")),
        sa.CheckConstraint(
            "threshold >= 1 AND threshold <= 1000", name=op.f("ck_usage_alerts_threshold_range")
        ),
        sa.ForeignKeyConstraint(
            ["meter"], ["meters.name"], name=op.f("fk_usage_alerts_meter_meters")
        ),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_usage_alerts_org_id_orgs")),
        sa.PrimaryKeyConstraint("org_id", "meter", "threshold", name=op.f("pk_usage_alerts")),
    )


def downgrade() -> None:
    op.drop_table("usage_alerts")
