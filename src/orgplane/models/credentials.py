"""API keys of every kind (native, datadog, make, sumologic) in one table; only hashes stored."""

import sqlalchemy as sa

from orgplane.models.base import BigId, Json, UTCDateTime, metadata

credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("public_id", sa.String(32), nullable=False, unique=True),
    sa.Column("org_id", BigId, sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("root_id", BigId, nullable=False),
    sa.Column("user_id", BigId, nullable=True),
    sa.Column("kind", sa.String(16), nullable=False, server_default="native"),
    sa.Column("name", sa.String(100), nullable=False),
    # sha256 of the secret, hex; the lookup key for authentication.
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    # The first characters of the secret, shown in listings so a user can tell keys apart.
    sa.Column("hint", sa.String(16), nullable=False),
    sa.Column("scopes", Json, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", BigId, nullable=True),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Index("ix_credentials_org_id_id", "org_id", "id"),
)
