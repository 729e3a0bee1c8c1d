"""Stored first responses of requests sent with an Idempotency-Key."""

import sqlalchemy as sa

from orgplane.models.base import Json, UTCDateTime, metadata

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    # The credential that sent the request: keys are private to their sender.
    sa.Column("owner", sa.String(32), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    # sha256 of method, path and body: a reuse with another request is refused.
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    # Response headers worth replaying (ETag, Location), as {name: value}.
    sa.Column("headers", Json, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_idempotency_keys_created_at", "created_at"),
)
