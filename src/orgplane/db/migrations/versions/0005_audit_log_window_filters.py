"""audit log: actor and action in the time-window index

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

``(org_id, at)`` made a time window an index range, but each entry of the window was still read
from the table to test the actor or action filter: 11,000 reads for a 30-day window of an org
with 140,000 entries. ``(org_id, at, actor, action)`` replaces it: the filters are tested in the
index and only matching entries are read. It serves the descendants' log too (each org's
entries since a time, with an action filter). Same number of indexes on every audited write.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_audit_log_org_id_at_actor_action", "audit_log", ["org_id", "at", "actor", "action"]
    )
    op.drop_index("ix_audit_log_org_id_at", table_name="audit_log")


def downgrade() -> None:
    op.create_index("ix_audit_log_org_id_at", "audit_log", ["org_id", "at"])
    op.drop_index("ix_audit_log_org_id_at_actor_action", table_name="audit_log")
