"""orgs: the path's unique index carries the org's id on PostgreSQL

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

The descendants' log reads a small subtree's orgs as a range of the path index and needs only
their ids. ``uq_orgs_path`` held the path alone, so PostgreSQL read every org row of the range
from the table (5,400 buffers, 16 ms for a region of 5,621 orgs at 1 million orgs). With
``UNIQUE (path) INCLUDE (id)`` the range is an index-only scan; uniqueness is unchanged.
SQLite's indexes already hold the id (the rowid): nothing changes there.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "uq_orgs_path"


def _rebuild(include: list[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_constraint(NAME, "orgs", type_="unique")
    # Columns, not names: Alembic's stand-in table for the constraint has only its key column.
    op.create_unique_constraint(
        NAME, "orgs", ["path"], postgresql_include=[sa.column(name) for name in include]
    )


def upgrade() -> None:
    _rebuild(["id"])


def downgrade() -> None:
    _rebuild([])
