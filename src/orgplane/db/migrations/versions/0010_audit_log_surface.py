"""audit_log.surface: the surface a change came through

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

Each entry names where its change came from: ``api`` (the native REST API), ``datadog``,
``make``, ``sumologic``, ``scim``, ``console`` or ``cli``. Entries written before this revision
have none (NULL), and the hash chain covers the field only when it is set, so their hashes, and
``orgplane audit verify`` over them, are unchanged. Adding a nullable column rewrites no rows on
either database.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("surface", sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_log", "surface")
