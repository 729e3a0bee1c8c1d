"""credits ledger and usage events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from orgplane.models.base import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("root_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.Column("charge_delta", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("org_amount", sa.BigInteger(), nullable=False),
        sa.Column("org_allocated", sa.BigInteger(), nullable=False),
        sa.Column("parent_amount", sa.BigInteger(), nullable=True),
        sa.Column("parent_allocated", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("actor_key_id", sa.String(length=32), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["meter"], ["meters.name"], name=op.f("fk_ledger_meter_meters")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger")),
    )
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_org_id_id", ["org_id", "id"], unique=False)
        batch_op.create_index("ix_ledger_parent_id_id", ["parent_id", "id"], unique=False)
        batch_op.create_index("ix_ledger_root_id_id", ["root_id", "id"], unique=False)

    op.create_table(
        "usage_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("root_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("quantity >= 0", name=op.f("ck_usage_events_quantity_nonnegative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
        sa.UniqueConstraint(
            "root_id", "idempotency_key", name=op.f("uq_usage_events_root_id_idempotency_key")
        ),
    )
    op.create_table(
        "usage_subtree_daily",
        sa.Column("org_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("root_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "meter", "day", name=op.f("pk_usage_subtree_daily")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "headers", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
            )
        )
    # Existing rows take their tenant root from their org; new columns are filled, then required.
    with op.batch_alter_table("org_limits", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "root_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column("allocated", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("charge", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("updated_at", UTCDateTime(), nullable=True))
    with op.batch_alter_table("usage_daily", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "root_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
    for table in ("org_limits", "usage_daily"):
        op.execute(
            f"UPDATE {table} SET root_id = "
            f"(SELECT orgs.root_id FROM orgs WHERE orgs.id = {table}.org_id)"
        )
    op.execute("UPDATE org_limits SET updated_at = CURRENT_TIMESTAMP")
    with op.batch_alter_table("org_limits", schema=None) as batch_op:
        batch_op.alter_column(
            "root_id",
            existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        )
        batch_op.alter_column("updated_at", existing_type=UTCDateTime(), nullable=False)
        batch_op.create_check_constraint("allocated_nonnegative", "allocated >= 0")
        batch_op.create_check_constraint("charge_nonnegative", "charge >= 0")
        batch_op.create_check_constraint("available_nonnegative", "amount >= allocated")
    with op.batch_alter_table("usage_daily", schema=None) as batch_op:
        batch_op.alter_column(
            "root_id",
            existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("headers")
    with op.batch_alter_table("usage_daily", schema=None) as batch_op:
        batch_op.drop_column("root_id")

    with op.batch_alter_table("org_limits", schema=None) as batch_op:
        batch_op.drop_constraint("available_nonnegative", type_="check")
        batch_op.drop_constraint("charge_nonnegative", type_="check")
        batch_op.drop_constraint("allocated_nonnegative", type_="check")
        batch_op.drop_column("updated_at")
        batch_op.drop_column("charge")
        batch_op.drop_column("allocated")
        batch_op.drop_column("root_id")

    op.drop_table("usage_subtree_daily")
    op.drop_table("usage_events")
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_root_id_id")
        batch_op.drop_index("ix_ledger_parent_id_id")
        batch_op.drop_index("ix_ledger_org_id_id")

    op.drop_table("ledger")
