"""Webhooks, their deliveries and attempts, and the event log's consumers' positions."""

import sqlalchemy as sa

from orgplane.models.base import BigId, Json, UTCDateTime, metadata

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("public_id", sa.String(32), nullable=False, unique=True),
    sa.Column("org_id", BigId, sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("root_id", BigId, nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("event_types", Json, nullable=False),
    sa.Column("include_descendants", sa.Boolean, nullable=False),
    sa.Column("description", sa.String(500), nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    # The signing secret sealed with the installation's key (core.sealing); after a rotation,
    # the previous one signs too until previous_secret_expires_at.
    sa.Column("secret_sealed", sa.String(200), nullable=False),
    sa.Column("previous_secret_sealed", sa.String(200), nullable=True),
    sa.Column("previous_secret_expires_at", UTCDateTime, nullable=True),
    # Events of the tenant's chain up to this position were committed before the webhook was.
    sa.Column("since_seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The first failed attempt since the last delivered one (None: not failing).
    sa.Column("failing_since", UTCDateTime, nullable=True),
    sa.Column("disabled_at", UTCDateTime, nullable=True),
    sa.Column("disabled_reason", sa.String(200), nullable=True),
    sa.Index("ix_webhooks_org_id_id", "org_id", "id"),
    sa.Index("ix_webhooks_root_id", "root_id"),
)

# One event to send to one endpoint, until it is delivered or its retries are spent.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "webhook_id", BigId, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("root_id", BigId, nullable=False),
    # The event: its audit entry's position in the tenant's chain, and its id.
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("event_id", sa.String(40), nullable=False),
    sa.Column("event_at", UTCDateTime, nullable=False),
    # pending, delivered, or failed (every retry spent).
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    # When it is due; a claimed delivery is due again when its lease ends (its worker died).
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("leased_until", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    # Claims take the earliest due pending deliveries.
    sa.Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    sa.Index("ix_webhook_deliveries_webhook_id_event_at", "webhook_id", "event_at"),
    sa.Index("ix_webhook_deliveries_webhook_id_event_id", "webhook_id", "event_id"),
)

# The delivery log: every request sent to an endpoint, and what came back.
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "webhook_id", BigId, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False
    ),
    # None for a test event, which is sent once and not queued.
    sa.Column("delivery_id", BigId, nullable=True),
    sa.Column("event_id", sa.String(40), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.String(200), nullable=True),
    sa.Column("latency_ms", sa.Integer, nullable=False),
    sa.Column("response_excerpt", sa.String(1024), nullable=True),
    sa.Index("ix_webhook_attempts_webhook_id_id", "webhook_id", "id"),
)

# Where each consumer of the event log (webhooks' dispatcher, the NATS sink) has read each
# tenant's chain up to: it moves in the transaction that does the consumer's work.
event_positions = sa.Table(
    "event_positions",
    metadata,
    sa.Column("consumer", sa.String(32), primary_key=True),
    sa.Column("root_id", BigId, primary_key=True, autoincrement=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
)

__all__ = ["event_positions", "webhook_attempts", "webhook_deliveries", "webhooks"]
