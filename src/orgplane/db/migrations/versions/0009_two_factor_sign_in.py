"""two-factor sign-in: TOTP per user, recovery codes, and the org switch that requires it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

users: the TOTP seed (sealed with AES-GCM, see core/people/totp.py), when its enrolment was
confirmed, and the last accepted time step (a code is accepted once). ``mfa_enabled`` goes: it
was never set (orgplane had no second factor) and is now whether ``totp_confirmed_at`` is set,
so it is derived instead of stored twice. Both databases drop a column in place (SQLite 3.35+
does; a batch rebuild of ``users`` would drop a table other tables point to).

mfa_recovery_codes: sha256 of each one-time recovery code, 10 per enrolment.

orgs.mfa_required: members signing in to the org or to one of its descendants need a second
factor.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from orgplane.models.base import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("users", sa.Column("totp_secret", sa.String(length=200), nullable=True))
    op.add_column("users", sa.Column("totp_confirmed_at", UTCDateTime(), nullable=True))
    op.add_column("users", sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
    op.drop_column("users", "mfa_enabled")
    op.add_column(
        "orgs",
        sa.Column("mfa_required", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_table(
        "mfa_recovery_codes",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_mfa_recovery_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mfa_recovery_codes")),
        sa.UniqueConstraint(
            "user_id", "code_hash", name=op.f("uq_mfa_recovery_codes_user_id_code_hash")
        ),
    )


def downgrade() -> None:
    op.drop_table("mfa_recovery_codes")
    op.drop_column("orgs", "mfa_required")
    op.add_column(
        "users",
        sa.Column("mfa_enabled", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    users = sa.table(
        "users", sa.column("mfa_enabled", sa.Boolean()), sa.column("totp_confirmed_at")
    )
    op.execute(users.update().values(mfa_enabled=users.c.totp_confirmed_at.is_not(None)))
    op.drop_column("users", "totp_last_step")
    op.drop_column("users", "totp_confirmed_at")
    op.drop_column("users", "totp_secret")
