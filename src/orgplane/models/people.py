"""People: users (one identity per email), their memberships in orgs, roles, invitations,
sign-in sessions, two-factor recovery codes.

System roles (owner, administrator, standard, read-only) exist in every org without rows of
their own; custom roles are rows of ``roles``. A membership's roles are rows of
``membership_roles`` naming either a system role's key or a custom role's public id.
"""

import sqlalchemy as sa

from orgplane.models.base import BigId, Json, UTCDateTime, metadata

USER_STATUSES = ("pending", "active", "disabled")

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("public_id", sa.String(32), nullable=False, unique=True),
    # As given, and lower-cased for uniqueness and look-up.
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("email_normalized", sa.String(254), nullable=False, unique=True),
    sa.Column("first_name", sa.String(100), nullable=False, server_default=""),
    sa.Column("last_name", sa.String(100), nullable=False, server_default=""),
    sa.Column("title", sa.String(100), nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("locked_at", UTCDateTime, nullable=True),
    # argon2id; None until the user sets a password (an invitation, a reset).
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failed_since", UTCDateTime, nullable=True),
    sa.Column("last_login_at", UTCDateTime, nullable=True),
    # Two-factor sign-in (TOTP, RFC 6238). The seed, sealed with AES-GCM under a key derived
    # from the server's secret key (core/people/totp.py): a TOTP seed is the one secret the
    # server must read back, so it cannot be stored as a hash. Set when an enrolment begins;
    # active once ``totp_confirmed_at`` is set (the user's ``mfa_enabled``).
    sa.Column("totp_secret", sa.String(200), nullable=True),
    sa.Column("totp_confirmed_at", UTCDateTime, nullable=True),
    # The last time step whose code was accepted: a code is good once, then never again.
    sa.Column("totp_last_step", sa.BigInteger, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("modified_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("modified_by", sa.String(200), nullable=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.CheckConstraint("status IN ('pending', 'active', 'disabled')", name="status_known"),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("user_id", BigId, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("org_id", BigId, sa.ForeignKey("orgs.id"), primary_key=True),
    sa.Column("root_id", BigId, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_memberships_org_id_user_id", "org_id", "user_id"),
)

roles = sa.Table(
    "roles",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("public_id", sa.String(32), nullable=False, unique=True),
    sa.Column("org_id", BigId, sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("root_id", BigId, nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    # Lower-cased name: unique per org whatever the case.
    sa.Column("name_normalized", sa.String(100), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("capabilities", Json, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("modified_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("org_id", "name_normalized"),
)

membership_roles = sa.Table(
    "membership_roles",
    metadata,
    sa.Column("user_id", BigId, primary_key=True),
    sa.Column("org_id", BigId, primary_key=True),
    # A system role's key ("owner", "administrator", "standard", "read-only") or a custom
    # role's public id.
    sa.Column("role", sa.String(32), primary_key=True),
    sa.ForeignKeyConstraint(
        ["user_id", "org_id"], ["memberships.user_id", "memberships.org_id"], ondelete="CASCADE"
    ),
    sa.Index("ix_membership_roles_org_id_role", "org_id", "role"),
)

invitations = sa.Table(
    "invitations",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("public_id", sa.String(32), nullable=False, unique=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("org_id", BigId, sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("root_id", BigId, nullable=False),
    sa.Column("user_id", BigId, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("roles", Json, nullable=False),
    sa.Column("invited_by", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("accepted_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Index("ix_invitations_org_id_id", "org_id", "id"),
)

# Sign-in sessions and one-time tokens (password resets, email changes): only hashes stored.
user_tokens = sa.Table(
    "user_tokens",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),  # session, password_reset, email_change
    sa.Column("user_id", BigId, sa.ForeignKey("users.id"), nullable=False),
    # The org a session acts in (its principal's org); None for other kinds.
    sa.Column("org_id", BigId, sa.ForeignKey("orgs.id"), nullable=True),
    sa.Column("data", Json, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("used_at", UTCDateTime, nullable=True),
    sa.Index("ix_user_tokens_user_id_kind", "user_id", "kind"),
)

# One-time recovery codes of a user's second factor: 10 per enrolment, each good once. Only the
# sha256 of a code is stored (codes carry 50 random bits and sign-in attempts are rate limited
# and locked out, as for API keys a salted slow hash would add nothing).
mfa_recovery_codes = sa.Table(
    "mfa_recovery_codes",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("code_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("used_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("user_id", "code_hash"),
)
