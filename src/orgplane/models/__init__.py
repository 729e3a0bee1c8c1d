"""The database schema as SQLAlchemy Core tables, one module per aggregate.

Queries are Core statements: the ORM measured several times slower on the hot paths here, and
rows map naturally to the msgspec structs the API returns.
"""

from orgplane.models.alerts import usage_alerts
from orgplane.models.audit import access_log, audit_chain_heads, audit_log
from orgplane.models.base import metadata
from orgplane.models.credentials import credentials
from orgplane.models.idempotency import idempotency_keys
from orgplane.models.orgs import org_tags, orgs
from orgplane.models.people import (
    invitations,
    membership_roles,
    memberships,
    mfa_recovery_codes,
    roles,
    user_tokens,
    users,
)
from orgplane.models.usage import (
    ledger,
    meters,
    org_limits,
    usage_daily,
    usage_events,
    usage_subtree_daily,
)
from orgplane.models.webhooks import (
    event_positions,
    webhook_attempts,
    webhook_deliveries,
    webhooks,
)

__all__ = [
    "access_log",
    "audit_chain_heads",
    "audit_log",
    "credentials",
    "event_positions",
    "idempotency_keys",
    "invitations",
    "ledger",
    "membership_roles",
    "memberships",
    "metadata",
    "meters",
    "mfa_recovery_codes",
    "org_limits",
    "org_tags",
    "orgs",
    "roles",
    "usage_alerts",
    "usage_daily",
    "usage_events",
    "usage_subtree_daily",
    "user_tokens",
    "users",
    "webhook_attempts",
    "webhook_deliveries",
    "webhooks",
]
