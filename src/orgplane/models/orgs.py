"""Organizations: one row per node of the tree, with every face's id derived from it."""

import sqlalchemy as sa

from orgplane.models.base import BigId, Json, PathString, UTCDateTime, metadata

ORG_STATUSES = ("active", "disabled", "deactivated", "deleted")
PLANS = ("trial", "free", "pro", "enterprise")
# The plans a customer pays for (reports of paid children count these).
PAID_PLANS = frozenset({"pro", "enterprise"})

orgs = sa.Table(
    "orgs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("public_id", sa.String(32), nullable=False, unique=True),
    sa.Column("parent_id", BigId, sa.ForeignKey("orgs.id"), nullable=True),
    # The tenant tree's root; every tenant table carries it so the schema can be sharded by it.
    sa.Column("root_id", BigId, nullable=False),
    # "/1/5/9/": ancestors' ids then its own; "inside P's subtree" is a prefix test.
    sa.Column("path", PathString, nullable=False),
    sa.Column("depth", sa.Integer, nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("deployment", sa.String(16), nullable=False, server_default="us1"),
    sa.Column("country", sa.String(2), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("plan", sa.String(16), nullable=False, server_default="free"),
    sa.Column("settings", Json, nullable=False),
    sa.Column("tags", Json, nullable=False),
    sa.Column("customizations", Json, nullable=False),
    # Every member signing in to this org or to one of its descendants needs a second factor.
    sa.Column("mfa_required", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("modified_at", UTCDateTime, nullable=False),
    sa.Column("deleted_at", UTCDateTime, nullable=True),
    # Set on the descendants a cascading delete took with it, so a restore brings them back.
    sa.Column("deleted_with", BigId, nullable=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.CheckConstraint("depth >= 0", name="depth_nonnegative"),
    sa.CheckConstraint(
        "status IN ('active', 'disabled', 'deactivated', 'deleted')", name="status_known"
    ),
    sa.CheckConstraint("plan IN ('trial', 'free', 'pro', 'enterprise')", name="plan_known"),
    # A subtree's org ids are a range of this index alone (SQLite's indexes hold the id already,
    # as the rowid): the descendants' log reads a small subtree's orgs without their rows.
    sa.UniqueConstraint("path", postgresql_include=["id"]),
    sa.Index("ix_orgs_parent_id_id", "parent_id", "id"),
    sa.Index("ix_orgs_root_id", "root_id"),
)

# Tags live in the org row (what is shown) and here (what is searched), written together.
org_tags = sa.Table(
    "org_tags",
    metadata,
    sa.Column("org_id", BigId, sa.ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag", sa.String(200), primary_key=True),
    sa.Index("ix_org_tags_tag_org_id", "tag", "org_id"),
)
