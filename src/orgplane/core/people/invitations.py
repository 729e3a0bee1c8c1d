"""Invitations: a one-time token (only its sha256 stored) that lets a person join and sign in.

Inviting adds the membership at once with its roles (a new person as a ``pending`` user, who
cannot act until they accept); accepting sets the password and makes the user ``active``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from orgplane.core.access.principal import Actor, Caller, Principal
from orgplane.core.access.service import reach
from orgplane.core.audit import service as audit
from orgplane.core.errors import Conflict, Gone, InvalidInput, NotFound
from orgplane.core.ids import hash_secret
from orgplane.core.pagination import decode_cursor, encode_cursor
from orgplane.core.people import memberships as ms
from orgplane.core.people import repository
from orgplane.core.people import users as user_service
from orgplane.db.engine import Reader, Tx
from orgplane.models.base import utcnow

VALID_FOR = timedelta(days=7)
TOKEN_PREFIX = "opi_"


@dataclass(frozen=True)
class Issued:
    """An invitation and, this once, its token."""

    row: Any
    token: str
    org_public_id: str


def state(row: Any) -> str:
    if row.accepted_at is not None:
        return "accepted"
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at <= utcnow():
        return "expired"
    return "pending"


def new_token() -> tuple[str, str]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_secret(token)


async def issue(tx: Tx, actor: Actor, org: Any, user_id: int, role_refs: list[str]) -> Issued:
    """A fresh invitation for a member already added (the caller added them)."""
    token, token_hash = new_token()
    invitation_id = await repository.insert_invitation(
        tx,
        org=org,
        user_id=user_id,
        roles=sorted(role_refs),
        token_hash=token_hash,
        by=actor.label,
        expires_at=utcnow() + VALID_FOR,
    )
    row = await repository.invitation(tx, invitation_id)
    audit.record(
        tx,
        actor,
        action="invitation.created",
        root_id=org.root_id,
        org_id=org.id,
        target_type="invitation",
        target_id=row.public_id,
        after={"email": row.email, "roles": list(row.roles), "expires_at": row.expires_at},
    )
    return Issued(row, token, org.public_id)


async def _in_org(conn: Reader, org: Any, invitation_ref: str, *, lock: bool = False) -> Any:
    """The invitation, or 404; ``lock`` holds its row until commit (a change that depends on
    its state: a concurrent accept must wait, then see the change)."""
    row = await repository.invitation_in_org(conn, org.id, invitation_ref, lock=lock)
    if row is None:
        raise NotFound(f"invitation {invitation_ref!r} not found in organization {org.public_id!r}")
    return row


async def list_invitations(
    conn: Reader, principal: Principal, org_ref: str, *, limit: int, cursor: str | None
) -> tuple[list[Any], str, str | None]:
    org = await reach(conn, principal, org_ref, scope="users:read")
    after = decode_cursor(cursor, int)
    rows = await repository.invitations_page(
        conn, org.id, after=after[0] if after else None, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, org.public_id, encode_cursor(rows[-1].id) if more else None


async def get_invitation(
    conn: Reader, principal: Principal, org_ref: str, invitation_ref: str
) -> tuple[Any, str]:
    org = await reach(conn, principal, org_ref, scope="users:read")
    return await _in_org(conn, org, invitation_ref), org.public_id


async def resend(tx: Tx, actor: Caller, org_ref: str, invitation_ref: str) -> Issued:
    """A new token and a new 7-day window; the old token stops working."""
    org = await reach(tx.conn, actor.principal, org_ref, scope="users:write")
    row = await _in_org(tx.conn, org, invitation_ref, lock=True)
    if row.accepted_at is not None or row.revoked_at is not None:
        raise Conflict(f"invitation {invitation_ref!r} is {state(row)}; it cannot be resent")
    token, token_hash = new_token()
    await repository.renew_invitation(tx, row.id, token_hash, utcnow() + VALID_FOR)
    after = await repository.invitation(tx, row.id)
    audit.record(
        tx,
        actor,
        action="invitation.resent",
        root_id=org.root_id,
        org_id=org.id,
        target_type="invitation",
        target_id=row.public_id,
        before={"expires_at": row.expires_at},
        after={"expires_at": after.expires_at},
    )
    return Issued(after, token, org.public_id)


async def resend_for_member(tx: Tx, actor: Caller, org_ref: str, user_ref: str) -> Issued:
    """Resend the member's latest open invitation to the org (a user who has not signed up yet);
    409 when there is none, e.g. the user already accepted it."""
    org = await reach(tx.conn, actor.principal, org_ref, scope="users:write")
    member = await user_service.get_member(tx.conn, actor.principal, org_ref, user_ref)
    open_ref = await repository.latest_open_invitation(tx, org.id, member.row.id)
    if open_ref is None:
        raise Conflict(
            f"user {user_ref!r} has no open invitation to organization {org.public_id!r} "
            "(they already signed up, or it was revoked)"
        )
    return await resend(tx, actor, org_ref, open_ref)


async def revoke(tx: Tx, actor: Caller, org_ref: str, invitation_ref: str) -> None:
    """Void the token. The membership stays (pending) until the user is removed."""
    org = await reach(tx.conn, actor.principal, org_ref, scope="users:write")
    row = await _in_org(tx.conn, org, invitation_ref, lock=True)
    if row.accepted_at is not None:
        raise Conflict(f"invitation {invitation_ref!r} was already accepted")
    if row.revoked_at is not None:
        return
    await repository.revoke_invitation(tx, row.id)
    audit.record(
        tx,
        actor,
        action="invitation.revoked",
        root_id=org.root_id,
        org_id=org.id,
        target_type="invitation",
        target_id=row.public_id,
        before={"email": row.email, "roles": list(row.roles)},
    )


@dataclass(frozen=True)
class Accepted:
    user_public_id: str
    email: str
    org_public_id: str
    roles: list[str]


async def accept(tx: Tx, meta: Any, token: str, password_hash: str | None) -> Accepted:
    """Set the password (hashed by the caller, outside the transaction; a user who already has
    one keeps it and must not send one) and make the user active.

    Unknown token → 404; revoked or expired → 410; already accepted → 409."""
    # Held until commit: a revoke or resend of this invitation waits, then sees it.
    row = await repository.invitation_by_token(tx, hash_secret(token), lock=True)
    if row is None:
        raise NotFound("no such invitation: the link is wrong or was replaced by a newer one")
    status = state(row)
    if status == "accepted":
        raise Conflict("this invitation was already accepted; sign in instead")
    if status in ("revoked", "expired"):
        raise Gone(f"this invitation is {status}; ask for a new one")
    # Locked before the status is checked: a concurrent disable cannot be overwritten.
    user = await repository.lock_user(tx, row.user_id)
    if user.status == "disabled":
        raise Conflict("this account is disabled")
    values: dict[str, Any] = {}
    if user.password_hash is None:
        if password_hash is None:
            raise InvalidInput.for_field("password", "is required to activate the account")
        values["password_hash"] = password_hash
    elif password_hash is not None:
        raise InvalidInput.for_field(
            "password", "this account already has a password; leave it out (or reset it)"
        )
    actor = Actor(meta=meta, label_override=f"user:{user.public_id}")
    if user.status != "active":
        values["status"] = "active"
    if values:
        await repository.write_user(tx, user.id, values, by=actor.label)
    # Guarded on accepted_at: of two concurrent accepts, only one updates the row.
    if not await repository.mark_accepted(tx, row.id):
        raise Conflict("this invitation was already accepted; sign in instead")
    held = (await ms.roles_of(tx, row.org_id, [user.id]))[user.id]
    audit.record(
        tx,
        actor,
        action="invitation.accepted",
        root_id=row.root_id,
        org_id=row.org_id,
        target_type="invitation",
        target_id=row.public_id,
        before={"status": user.status},
        after={"user_id": user.public_id, "status": "active", "roles": sorted(held)},
    )
    return Accepted(user.public_id, user.email, row.org_public_id, sorted(held))
