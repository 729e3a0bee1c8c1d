"""The audit log (a hash chain per tenant tree) and the access log (every authentication)."""

import sqlalchemy as sa

from orgplane.models.base import BigId, Json, UTCDateTime, metadata

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("root_id", BigId, nullable=False),
    # Position in the tenant's chain: 1, 2, 3, ... without gaps.
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("org_id", BigId, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("actor_key_id", sa.String(32), nullable=True),
    sa.Column("actor_user_id", BigId, nullable=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target_type", sa.String(32), nullable=False),
    sa.Column("target_id", sa.String(64), nullable=False),
    sa.Column("before", Json, nullable=True),
    sa.Column("after", Json, nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(400), nullable=True),
    # api, datadog, make, sumologic, scim, console or cli; NULL before revision 0010.
    sa.Column("surface", sa.String(16), nullable=True),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.UniqueConstraint("root_id", "seq"),
    sa.Index("ix_audit_log_org_id_id", "org_id", "id"),
    # Time windows of one org's trail (since/until) are an index range, not a scan of the org,
    # and the actor and action filters are tested in the index: only matches are read. The id
    # (SQLite's indexes hold it already, as the rowid) makes the descendants' log's read of each
    # org's window an index-only scan on PostgreSQL.
    sa.Index(
        "ix_audit_log_org_id_at_actor_action",
        "org_id",
        "at",
        "actor",
        "action",
        postgresql_include=["id"],
    ),
    # One actor's entries of an org newest first, the time window tested in the index: a page
    # is a walk that stops at its last match, not a sort of every match in the window.
    sa.Index("ix_audit_log_org_id_actor_id_at", "org_id", "actor", "id", "at"),
    # The descendants' log walks the tenant's chain newest first and tests its filters here,
    # reading no table row until an entry matches (see core/audit/queries.py).
    sa.Index(
        "ix_audit_log_root_id_seq_org_id_at_action_actor",
        "root_id",
        "seq",
        "org_id",
        "at",
        "action",
        "actor",
    ),
)

# The last link of each tenant's chain; updating it serializes appends within one tenant.
audit_chain_heads = sa.Table(
    "audit_chain_heads",
    metadata,
    sa.Column("root_id", BigId, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
)

access_log = sa.Table(
    "access_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("root_id", BigId, nullable=True),
    sa.Column("org_id", BigId, nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=True),
    sa.Column("user_id", BigId, nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("method", sa.String(10), nullable=True),
    sa.Column("path", sa.String(400), nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(400), nullable=True),
    sa.Column("detail", sa.String(200), nullable=True),
    sa.Index("ix_access_log_org_id_id", "org_id", "id"),
)
